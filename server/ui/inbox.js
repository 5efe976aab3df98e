// The inbox: every run waiting on a person. Signals with their question and choices get a
// form that answers them (SignalRun); lost writes get retry / mark done / mark failed; tool
// calls waiting for approval get approve (optional comment) / deny (reason required), with the
// arguments fetched only when asked for.

import * as api from "./api.js";
import { h, ago, time } from "./fmt.js";
import { banner, confirmAction, isReadOnly } from "./app.js";
import { parseInput } from "./run.js";

export function inboxPage(main, onChange) {
  const list = h("div", { id: "inbox" }, h("p", { class: "muted" }, "loading…"));
  main.append(h("section", {}, h("div", { class: "head" }, h("h1", {}, "Inbox"), h("span", { class: "muted" }, "runs waiting on a person")), list));

  function signalCard(r, w) {
    const answered = (what) => { banner(`Answered ${r.workflow_type} ${r.run_id.slice(0, 8)}: ${what}`, "ok"); load(); onChange(); };
    const send = async (input, label) => {
      try {
        await api.post(`/runs/${r.run_id}/signal`, { name: w.name, input, request_id: `ui-${r.run_id}-${w.name}-${Date.now()}` });
        answered(label);
      } catch (e) { banner(e.message); }
    };
    const text = h("textarea", { name: "answer", rows: 2, placeholder: "answer (JSON, or text)", class: "answer" });
    const form = h("form", { class: "answer-form", onsubmit: (e) => { e.preventDefault(); send(parseInput(text.value), "answer sent"); } },
      text, h("button", { type: "submit", class: "send" }, "Send answer"));
    const choices = (w.choices || []).length
      ? h("div", { class: "choices" }, w.choices.map((c) => h("button", { type: "button", class: "choice", "data-choice": c, onclick: () => send(c, c) }, c)))
      : h("div", { class: "choices" },
        h("button", { type: "button", class: "choice approve", onclick: () => send({ approved: true }, "approved") }, "Approve"),
        h("button", { type: "button", class: "choice reject", onclick: () => send({ approved: false }, "rejected") }, "Reject"));
    const since = Date.parse(w.since || "") || null;
    return h("div", { class: "card", "data-run": r.run_id, "data-key": "signal:" + w.name },
      h("div", { class: "card-head" }, h("a", { href: "#/run/" + r.run_id }, r.workflow_type), " ", h("span", { class: "mono small" }, r.run_id),
        since ? h("span", { class: "muted", title: time(since) }, " · waiting " + ago(since)) : ""),
      h("div", { class: "question" }, w.question || `Signal "${w.name}"`),
      isReadOnly() ? h("p", { class: "muted" }, "read-only") : [choices, form]);
  }

  function reconcileCard(r, w) {
    const go = (decision, fields, text) => confirmAction({
      title: `Reconcile #${w.activity_id} ${w.activity_type} (${decision})`, text, fields,
      act: (v) => api.post(`/runs/${r.run_id}/reconcile`, { activity_id: w.activity_id, decision, result: v.result ? JSON.parse(v.result) : null, message: v.message || "" }),
    }).then((ok) => { if (ok) { load(); onChange(); } });
    return h("div", { class: "card", "data-run": r.run_id, "data-key": "reconcile:" + w.activity_id },
      h("div", { class: "card-head" }, h("a", { href: "#/run/" + r.run_id }, r.workflow_type), " ", h("span", { class: "mono small" }, r.run_id)),
      h("div", { class: "question" }, `A write (#${w.activity_id} ${w.activity_type}, attempt ${w.attempt}) was lost mid-way: did it happen?`),
      isReadOnly() ? h("p", { class: "muted" }, "read-only") : h("div", { class: "choices" },
        h("button", { type: "button", onclick: () => go("retry", [], "Run the write again.") }, "Retry"),
        h("button", { type: "button", onclick: () => go("complete", [{ name: "result", label: "result (JSON)", type: "textarea", value: "null" }], "It happened: complete it with this result.") }, "It happened"),
        h("button", { type: "button", onclick: () => go("fail", [{ name: "message", label: "why" }], "It did not happen; fail it without retrying.") }, "It did not")));
  }

  function approvalCard(r, w) {
    const base = `/runs/${r.run_id}/approvals/${w.activity_id}`;
    const decided = (what) => { banner(`${what} #${w.activity_id} ${w.activity_type} of ${r.run_id.slice(0, 8)}`, "ok"); load(); onChange(); };
    const argsBox = h("pre", { class: "payload", hidden: true });
    const showArgs = async () => {
      try {
        const a = (await api.get(base)).approval;
        argsBox.textContent = (a.arguments_preview || "") + (a.truncated ? `\n… truncated, ${a.arguments_bytes} bytes (the history download has them whole)` : "");
        argsBox.hidden = false;
      } catch (e) { banner(e.message); }
    };
    const comment = h("input", { name: "comment", placeholder: "comment (optional)", class: "comment" });
    const reason = h("input", { name: "reason", placeholder: "reason (required to deny)", class: "reason" });
    const act = async (path, body, what) => {
      try { await api.post(`${base}/${path}`, body); decided(what); } catch (e) { banner(e.message); }
    };
    const approveForm = h("form", { class: "approve-form", onsubmit: (e) => { e.preventDefault(); act("approve", { comment: comment.value }, "Approved"); } },
      comment, h("button", { type: "submit", class: "approve" }, "Approve"));
    const denyForm = h("form", { class: "deny-form", onsubmit: (e) => {
      e.preventDefault();
      if (!reason.value.trim()) { banner("A denial needs a reason: the workflow receives it."); return; }
      act("deny", { reason: reason.value }, "Denied");
    } }, reason, h("button", { type: "submit", class: "reject" }, "Deny"));
    const since = Date.parse(w.since || "") || null;
    return h("div", { class: "card approval", "data-run": r.run_id, "data-key": "approval:" + w.activity_id },
      h("div", { class: "card-head" }, h("a", { href: "#/run/" + r.run_id }, r.workflow_type), " ", h("span", { class: "mono small" }, r.run_id),
        since ? h("span", { class: "muted", title: time(since) }, " · waiting " + ago(since)) : ""),
      h("div", { class: "question" }, `Tool #${w.activity_id} ${w.activity_type} (attempt ${w.attempt}) asks for approval: ${w.reason || "no reason given"}`),
      h("div", { class: "muted small" }, `arguments ${w.arguments_bytes} B, blake3:${(w.arguments_blake3 || "").slice(0, 16)}…`,
        w.declared_by ? ` · declared by worker ${w.declared_by}` : "", " ",
        h("button", { type: "button", class: "show-args", onclick: showArgs }, "Show arguments")),
      argsBox,
      isReadOnly() ? h("p", { class: "muted" }, "read-only") : h("div", { class: "choices" }, approveForm, denyForm));
  }

  // A reload (after an answer, or the periodic one) rebuilds the cards: what was typed in the
  // other cards, and arguments already shown, stay.
  const cardKey = (el) => { const c = el.closest(".card"); return c ? c.dataset.run + "|" + c.dataset.key : null; };
  function keep() {
    const kept = new Map();
    for (const el of list.querySelectorAll(".card input, .card textarea")) if (el.value) kept.set(cardKey(el) + "|" + el.name, el.value);
    for (const el of list.querySelectorAll(".card pre.payload")) if (!el.hidden) kept.set(cardKey(el) + "|pre", el.textContent);
    return kept;
  }
  function restore(kept) {
    for (const el of list.querySelectorAll(".card input, .card textarea")) {
      const v = kept.get(cardKey(el) + "|" + el.name);
      if (v !== undefined) el.value = v;
    }
    for (const el of list.querySelectorAll(".card pre.payload")) {
      const v = kept.get(cardKey(el) + "|pre");
      if (v !== undefined) { el.textContent = v; el.hidden = false; }
    }
  }

  async function load() {
    try {
      const inbox = await api.get("/inbox");
      const cards = [];
      for (const r of inbox.signals) for (const w of r.waiting_on.filter((w) => w.kind === "signal")) cards.push(signalCard(r, w));
      for (const r of inbox.approvals || []) for (const w of r.waiting_on.filter((w) => w.kind === "approval")) cards.push(approvalCard(r, w));
      for (const r of inbox.reconciliations) for (const w of r.waiting_on.filter((w) => w.kind === "reconciliation")) cards.push(reconcileCard(r, w));
      if (inbox.truncated) cards.push(h("p", { class: "muted" }, "More runs wait than shown: filter the runs list by waiting-on."));
      const kept = keep();
      list.replaceChildren(...(cards.length ? cards : [h("p", { class: "empty" }, "Nothing waits on a person.")]));
      restore(kept);
    } catch (e) { banner(e.message); }
  }
  load();
  const timer = setInterval(() => { if (!list.contains(document.activeElement)) load(); }, 3000);
  return () => clearInterval(timer);
}
