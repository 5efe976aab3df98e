// One run: what it does now (pinned), its totals, the waterfall, the compact history (tail
// first, older pages on demand), the step panel with payloads on demand, and the actions.

import * as api from "./api.js";
import { h, usd, tokens, duration, time, waiting, statusBadge, copyButton } from "./fmt.js";
import { timeline, activities, childRuns } from "./timeline.js";
import { banner, confirmAction, isReadOnly } from "./app.js";

const PAGE = 200;

export function runPage(main, runId) {
  const state = { run: null, events: new Map(), older: null, skew: 0, picked: null };
  const now = () => Date.now() + state.skew;
  const nowPanel = h("section", { class: "now", id: "now" });
  const actions = h("div", { class: "actions", id: "actions" });
  const summary = h("section", { class: "summary", id: "summary" });
  const tl = h("section", {}, h("h2", {}, "Timeline"), h("div", { id: "timeline-box" }));
  const olderBtn = h("button", { class: "secondary", id: "older", hidden: true }, "Load older events");
  const hist = h("tbody", { id: "history-body" });
  const history = h("section", {},
    h("div", { class: "head" }, h("h2", {}, "History"),
      h("button", { class: "secondary", id: "download", onclick: () => api.download(`/runs/${runId}/history.json`, {}, `history-${runId}.jsonl`).catch((e) => banner(e.message)) }, "Download JSON")),
    olderBtn,
    h("table", { class: "history", id: "history" },
      h("thead", {}, h("tr", {}, ["Seq", "Time", "Step", "What", "Took", "Tokens", "Cost"].map((c) => h("th", {}, c)))), hist));
  const panel = h("aside", { class: "step", id: "step", hidden: true });
  main.append(h("div", { class: "run-page" }, h("div", { class: "run-main" }, nowPanel, actions, summary, tl, history), panel));

  let scheduled = false;
  const render = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; draw(); });
  };
  const sorted = () => [...state.events.values()].sort((a, b) => a.seq - b.seq);

  function draw() {
    if (!state.run) return;
    drawNow();
    drawSummary();
    drawActions();
    const events = sorted();
    document.getElementById("timeline-box").replaceChildren(timeline(events, state.run.closed_ms || now(), (a) => pick({ kind: "activity", act: a })));
    drawHistory(events);
    olderBtn.hidden = state.older === null;
  }

  function drawNow() {
    const r = state.run;
    const end = r.closed_ms || now();
    const kids = [h("div", { class: "now-head" },
      statusBadge(r.status), r.cancel_requested && r.status === "running" ? h("span", { class: "warn" }, " cancel requested") : "",
      h("span", { class: "dur", id: "live-duration" }, (r.closed_ms ? " took " : " running for ") + duration(end - r.started_ms)))];
    if (r.status === "running") {
      const ws = r.waiting_on || [];
      kids.push(h("div", { class: "waits", id: "waiting-on" }, ws.length ? ws.map((w) => {
        const since = Date.parse(w.since || "") || null;
        return h("div", { class: "wait w-" + w.kind }, h("strong", {}, "Waiting on "), waiting(w),
          since ? h("span", { class: "since" }, ` · since ${time(since)} (${duration(now() - since)})`) : "",
          w.kind === "activity" ? h("span", { class: "since" }, ` · attempt ${w.attempt}`) : "",
          w.kind === "signal" && w.choices && w.choices.length ? h("span", { class: "since" }, ` · choices: ${w.choices.join(", ")}`) : "",
          w.kind === "reconciliation" && !isReadOnly() ? reconcileButtons(w) : "",
          w.kind === "signal" && !isReadOnly() ? h("a", { href: "#/inbox", class: "btn-link" }, " answer in the inbox") : "");
      }) : h("div", {}, "Waiting on nothing: a worker is deciding the next step.")));
    } else if (r.failure) {
      kids.push(h("div", { class: "failure" }, r.failure.type ? `${r.failure.type}: ` : "", r.failure.message));
    }
    if (r.progress) {
      const p = r.progress;
      const frac = p.total ? Math.min(1, p.done / p.total) : 0;
      kids.push(h("div", { class: "progress", id: "progress" },
        h("div", { class: "bar-outer" }, h("div", { class: "bar-inner", style: { width: (frac * 100).toFixed(1) + "%" } })),
        h("span", {}, p.total ? `${p.done}/${p.total}` : String(p.done), p.message ? " · " + p.message : "")));
    }
    nowPanel.replaceChildren(...kids);
  }

  function reconcileButtons(w) {
    const go = (decision, fields, text) => confirmAction({
      title: `Reconcile activity #${w.activity_id} (${decision})`, text, fields,
      act: (v) => api.post(`/runs/${runId}/reconcile`, { activity_id: w.activity_id, decision, result: v.result ? JSON.parse(v.result) : null, message: v.message || "" }),
    }).then(refresh);
    return h("span", { class: "inline-actions" },
      h("button", { class: "secondary", onclick: () => go("retry", [], "Its write may or may not have happened. Retry runs it again.") }, "retry"),
      h("button", { class: "secondary", onclick: () => go("complete", [{ name: "result", label: "result (JSON)", type: "textarea", value: "null" }], "The write happened: complete it with this result.") }, "mark done"),
      h("button", { class: "secondary", onclick: () => go("fail", [{ name: "message", label: "why" }], "The write did not happen and must not be retried.") }, "mark failed"));
  }

  function drawSummary() {
    const r = state.run, u = r.usage || {}, b = r.budget || {};
    const cell = (k, v) => h("div", { class: "kv" }, h("span", { class: "k" }, k), h("span", { class: "v" }, v));
    const kids = [
      h("h1", {}, r.workflow_type, " ", h("span", { class: "mono small" }, r.run_id), copyButton(r.run_id, "copy id")),
      h("div", { class: "grid" },
        cell("workflow id", r.workflow_id), cell("task queue", r.task_queue),
        cell("started", time(r.started_ms)), cell("events", String(r.history_length)),
        cell("steps", String(u.activities || 0)), cell("LLM calls", String(u.llm_calls || 0)),
        cell("tokens", `${tokens(u)} (${u.input_tokens || 0} in / ${u.output_tokens || 0} out)`),
        h("div", { class: "kv" }, h("span", { class: "k" }, "cost"), h("span", { class: "v cost", id: "total-cost" }, usd(u.cost_micros))),
        cell("budget", [b.max_tokens ? `${b.max_tokens} tokens` : "", b.max_cost_micros ? usd(b.max_cost_micros) : "", b.max_activities ? `${b.max_activities} steps` : "", b.max_duration_ms ? duration(b.max_duration_ms) : ""].filter(Boolean).join(", ") || "none")),
    ];
    const links = [];
    if (r.parent_run_id) links.push(h("a", { href: "#/run/" + r.parent_run_id }, "parent"));
    if (r.continued_from) links.push(h("a", { href: "#/run/" + r.continued_from }, "continued from"));
    if (r.continued_to) links.push(h("a", { href: "#/run/" + r.continued_to }, "continued as"));
    if (r.forked_from) links.push(h("a", { href: "#/run/" + r.forked_from.run_id }, `forked from (seq ${r.forked_from.seq})`));
    if (links.length) kids.push(h("div", { class: "links" }, links.flatMap((l) => [l, " "])));
    if (r.children && r.children.length) {
      kids.push(h("div", { class: "children" }, h("strong", {}, "Children: "),
        r.children.map((c) => h("span", {}, c.run_id ? h("a", { href: "#/run/" + c.run_id }, `${c.workflow_type}`) : c.workflow_type, ` (${c.state}) `))));
    }
    summary.replaceChildren(...kids);
  }

  function drawActions() {
    if (isReadOnly()) { actions.replaceChildren(h("span", { class: "muted" }, "read-only")); return; }
    const running = state.run.status === "running";
    const btn = (label, id, f, enabled = true) => h("button", { class: "secondary", id, disabled: !enabled, onclick: f }, label);
    actions.replaceChildren(
      btn("Signal…", "act-signal", () => confirmAction({
        title: "Send a signal", ok: "Send",
        fields: [{ name: "name", label: "signal name" }, { name: "input", label: "input (JSON, or text)", type: "textarea", value: "" }],
        act: (v) => api.post(`/runs/${runId}/signal`, { name: v.name, input: parseInput(v.input) }),
      }).then(refresh), running),
      btn("Cancel…", "act-cancel", () => confirmAction({
        title: "Cancel this run?", text: "The workflow is asked to stop; it may clean up first.", ok: "Cancel the run",
        fields: [{ name: "reason", label: "reason" }],
        act: (v) => api.post(`/runs/${runId}/cancel`, { reason: v.reason }),
      }).then(refresh), running),
      btn("Terminate…", "act-terminate", () => confirmAction({
        title: "Terminate this run?", text: "It ends now, without running any more of its code.", ok: "Terminate",
        fields: [{ name: "reason", label: "reason" }],
        act: (v) => api.post(`/runs/${runId}/terminate`, { reason: v.reason }),
      }).then(refresh), running),
      btn("Raise budget…", "act-budget", () => confirmAction({
        title: "Change the budget", text: "Empty or 0 keeps a ceiling as it is.", ok: "Set budget",
        fields: [{ name: "max_tokens", label: "max tokens" }, { name: "max_cost_usd", label: "max cost (USD)" }, { name: "max_activities", label: "max steps" }],
        act: (v) => api.post(`/runs/${runId}/budget`, {
          max_tokens: Number(v.max_tokens) || 0, max_cost_micros: Math.round((Number(v.max_cost_usd) || 0) * 1e6), max_activities: Number(v.max_activities) || 0,
        }),
      }).then(refresh), running),
      btn("Fork…", "act-fork", () => forkDialog(false)),
      btn("Reset…", "act-reset", () => forkDialog(true), running));
  }

  function forkDialog(reset) {
    confirmAction({
      title: reset ? "Reset this run" : "Fork this run",
      text: (reset ? "A new run continues from the workflow-task boundary at or before this seq, and this run is terminated." : "A new run continues from the workflow-task boundary at or before this seq; this one is left as it is."),
      ok: reset ? "Reset" : "Fork",
      fields: [{ name: "seq", label: "seq", value: String(state.run.history_length) }],
      act: (v) => api.post(`/runs/${runId}/fork`, { seq: Number(v.seq), reset }),
    }).then((r) => { if (r && r.run_id) location.hash = "#/run/" + r.run_id; });
  }

  function groups(events) {
    const out = [];
    const byKey = new Map();
    let wt = null;
    for (const e of events) {
      const a = e.attributes || {};
      let key = null;
      if (a.activity_id !== undefined) key = "a" + a.activity_id;
      else if (e.kind.startsWith("WorkflowTask")) {
        if (e.kind === "WorkflowTaskScheduled" || !wt) wt = "w" + e.seq;
        key = wt;
      } else if (a.timer_id !== undefined) key = "t" + a.timer_id;
      else if (e.kind.startsWith("ChildRun")) key = "c" + a.command_seq;
      if (key && byKey.has(key)) { byKey.get(key).events.push(e); continue; }
      const g = { key: key || "e" + e.seq, events: [e] };
      if (key) byKey.set(key, g);
      out.push(g);
    }
    return out;
  }

  function describeGroup(g) {
    const first = g.events[0], last = g.events[g.events.length - 1], a = first.attributes || {};
    const kinds = g.events.map((e) => e.kind);
    if (g.key.startsWith("a")) {
      const act = activities(g.events)[0] || { attempts: [], usage: {} };
      const type = (g.events.find((e) => e.kind === "ActivityScheduled") || {}).attributes?.activity_type || "";
      const attempts = act.attempts.length;
      const end = last.kind.replace("Activity", "").toLowerCase();
      const label = `activity #${a.activity_id} ${type}`;
      const what = `${kinds.includes("ActivityScheduled") ? "scheduled" : ""}${attempts ? ` → ${attempts} attempt${attempts > 1 ? "s" : ""}` : ""} → ${end}`;
      const took = act.attempts.length && act.attempts[act.attempts.length - 1].end ? duration(act.attempts[act.attempts.length - 1].end - (act.scheduled ?? first.time_ms)) : "";
      return { label, what, took, usage: act.usage, outcome: end, type };
    }
    if (g.key.startsWith("w")) {
      return { label: "workflow task", what: kinds.map((k) => k.replace("WorkflowTask", "").toLowerCase()).join(" → "), took: duration(last.time_ms - first.time_ms) };
    }
    if (g.key.startsWith("t")) {
      return { label: `timer #${a.timer_id}`, what: kinds.map((k) => k.replace("Timer", "").toLowerCase()).join(" → "), took: g.events.length > 1 ? duration(last.time_ms - first.time_ms) : "" };
    }
    if (g.key.startsWith("c")) {
      const kid = childRuns(g.events)[0] || {};
      return { label: `child #${a.command_seq} ${kid.type || ""}`, what: kinds.map((k) => k.replace("ChildRun", "").toLowerCase()).join(" → ") + (kid.end !== null && kid.status ? ` (${kid.status})` : ""), took: kid.end ? duration(kid.end - kid.start) : "", outcome: kid.end !== null ? kid.status : "" };
    }
    const brief = Object.entries(a).filter(([, v]) => v !== null && typeof v !== "object" && v !== "").slice(0, 4).map(([k, v]) => `${k}=${v}`).join(" ");
    return { label: first.kind, what: brief, took: "" };
  }

  function drawHistory(events) {
    const rows = groups(events).reverse().map((g) => {
      const d = describeGroup(g);
      const u = d.usage || {};
      const first = g.events[0];
      return h("tr", { class: "g-" + g.key[0] + (d.outcome ? " o-" + d.outcome : ""), "data-group": g.key, onclick: () => pick({ kind: "group", group: g, d }) },
        h("td", { class: "mono" }, g.events.length > 1 ? `${first.seq}–${g.events[g.events.length - 1].seq}` : String(first.seq)),
        h("td", { class: "small" }, time(first.time_ms)),
        h("td", {}, d.label), h("td", { class: "small" }, d.what), h("td", {}, d.took),
        h("td", { class: "num" }, u.input_tokens || u.output_tokens ? String(tokens(u)) : ""),
        h("td", { class: "num cost" }, u.cost_micros ? usd(u.cost_micros) : ""));
    });
    hist.replaceChildren(...rows);
  }

  function pick(sel) {
    state.picked = sel;
    let g = sel.group;
    if (sel.kind === "activity") {
      g = groups(sorted()).find((x) => x.key === "a" + sel.act.id);
      if (!g) return;
    }
    const d = describeGroup(g);
    panel.hidden = false;
    const body = [h("div", { class: "head" }, h("h2", {}, d.label), h("button", { class: "link", onclick: () => { panel.hidden = true; } }, "close"))];
    if (d.usage && (d.usage.input_tokens || d.usage.cost_micros)) {
      body.push(h("p", { class: "usage" }, `${tokens(d.usage)} tokens (${d.usage.input_tokens} in / ${d.usage.output_tokens} out) · ${usd(d.usage.cost_micros)}${d.usage.model ? " · " + d.usage.model : ""}`));
    }
    if (d.type === "llm.chat") body.push(conversation(g));
    for (const e of g.events) body.push(eventBlock(e));
    panel.replaceChildren(...body);
  }

  function eventBlock(e) {
    const attrs = e.attributes || {};
    const plain = {};
    const payloads = [];
    for (const [k, v] of Object.entries(attrs)) {
      if (v && typeof v === "object" && v.payload === true) payloads.push([k, v]); else plain[k] = v;
    }
    const box = h("div", { class: "event", "data-seq": e.seq },
      h("div", { class: "ev-head" }, h("strong", {}, e.kind), ` · seq ${e.seq} · ${time(e.time_ms)}`),
      attrs.failure ? h("div", { class: "failure" }, attrs.failure.type ? attrs.failure.type + ": " : "", attrs.failure.message) : "",
      h("pre", { class: "attrs" }, JSON.stringify(plain, null, 2)));
    for (const [field, stub] of payloads) {
      const slot = h("div", { class: "payload" });
      const show = h("button", { class: "secondary", "data-field": field }, `show ${field} (${stub.bytes} bytes)`);
      show.addEventListener("click", async () => {
        try {
          const p = await api.get(`/runs/${runId}/events/${e.seq}/payloads`, { field });
          slot.replaceChildren(payloadView(e.seq, p));
        } catch (err) { slot.replaceChildren(h("span", { class: "error" }, err.message)); }
      });
      slot.append(show);
      box.append(slot);
    }
    return box;
  }

  function payloadView(seq, p) {
    const text = p.value !== null && p.value !== undefined ? JSON.stringify(p.value, null, 2) : p.text;
    const dl = h("button", { class: "link", onclick: () => api.download(`/runs/${runId}/events/${seq}/payloads`, { field: p.field, download: "true" }, `${runId}-${seq}-${p.field}`).catch((e) => banner(e.message)) }, "download");
    return h("div", {},
      h("div", { class: "ev-head" }, `${p.field} · ${p.bytes} bytes · ${p.encoding} `, copyButton(text), " ", dl),
      p.truncated ? h("div", { class: "warn" }, `truncated, ${p.bytes} bytes — download for the whole payload`) : "",
      h("pre", { class: "payload-text" }, text));
  }

  function conversation(g) {
    const box = h("div", { class: "chat", id: "conversation" }, h("p", { class: "muted" }, "loading the conversation…"));
    const sched = g.events.find((e) => e.kind === "ActivityScheduled");
    const done = g.events.find((e) => e.kind === "ActivityCompleted");
    (async () => {
      try {
        const input = sched ? (await api.get(`/runs/${runId}/events/${sched.seq}/payloads`, { field: "input" })).value : null;
        const output = done ? (await api.get(`/runs/${runId}/events/${done.seq}/payloads`, { field: "result" })).value : null;
        const msgs = [];
        if (input && input.transcript && input.transcript.prev) msgs.push(h("p", { class: "muted" }, `continues an earlier call's transcript (${input.transcript.prev_messages} earlier messages)`));
        for (const m of (input && input.messages) || []) msgs.push(message(m));
        if (output) msgs.push(message({ role: "assistant", content: output.content, tool_calls: output.tool_calls }, output));
        box.replaceChildren(h("h3", {}, "Conversation"), ...msgs);
      } catch (e) { box.replaceChildren(h("span", { class: "error" }, e.message)); }
    })();
    return box;
  }

  function message(m, response) {
    return h("div", { class: "msg role-" + m.role },
      h("div", { class: "role" }, m.role, m.tool_call_id ? ` (answers ${m.tool_call_id})` : "", response ? ` · ${response.model || ""} · ${response.finish_reason || ""}` : ""),
      m.content ? h("div", { class: "content" }, m.content) : "",
      (m.tool_calls || []).map((c) => h("div", { class: "tool-call" }, h("code", {}, `${c.name || (c.function && c.function.name) || "tool"}(${typeof c.arguments === "string" ? c.arguments : JSON.stringify(c.arguments ?? c.function?.arguments ?? {})})`), c.id ? ` · ${c.id}` : "")));
  }

  async function loadOlder() {
    if (state.older === null) return;
    try {
      const page = await api.get(`/runs/${runId}/history`, { before: state.older, limit: PAGE });
      for (const e of page.events) state.events.set(e.seq, e);
      state.older = page.older;
      render();
    } catch (e) { banner(e.message); }
  }
  olderBtn.addEventListener("click", loadOlder);

  async function refresh() {
    try {
      const d = await api.get(`/runs/${runId}`);
      state.run = d.run;
      state.skew = d.now_ms - Date.now();
      render();
    } catch (e) { banner(e.message); }
  }

  let stop = () => {};
  const tick = setInterval(() => {
    if (!state.run || state.run.closed_ms) return;
    const el = document.getElementById("live-duration");
    if (el) el.textContent = " running for " + duration(now() - state.run.started_ms);
  }, 1000);
  (async () => {
    try {
      const d = await api.get(`/runs/${runId}`);
      state.run = d.run;
      state.skew = d.now_ms - Date.now();
      const page = await api.get(`/runs/${runId}/history`, { limit: PAGE });
      for (const e of page.events) state.events.set(e.seq, e);
      state.older = page.older;
      render();
      const last = page.events.length ? page.events[page.events.length - 1].seq : 0;
      stop = api.stream(`/runs/${runId}/events`, {}, (ev) => {
        if (ev.data.event) state.events.set(ev.data.event.seq, ev.data.event);
        if (ev.data.run) state.run = ev.data.run;
        render();
        if (state.picked && state.picked.kind === "activity") pick(state.picked);
      }, { lastEventId: last, onEnd: refresh, onError: (e) => banner(e.message) });
    } catch (e) { banner(e.message); }
  })();
  return () => { stop(); clearInterval(tick); };
}

/** A form's input: JSON when it parses, else the text itself. */
export function parseInput(text) {
  const t = (text || "").trim();
  if (!t) return null;
  try { return JSON.parse(t); } catch (_) { return t; }
}
