// The runs list: filters, id search, steps / tokens / cost / waiting-on columns, live.

import * as api from "./api.js";
import { h, usd, tokens, waitingSummary, statusBadge, ago, duration } from "./fmt.js";
import { banner } from "./app.js";

const STATUSES = ["", "running", "completed", "failed", "cancelled", "terminated", "timed_out", "continued_as_new"];
const WAITING = ["", "signal", "approval", "activity", "timer", "budget", "reconciliation", "child", "workflow_task", "idle"];

function filtersFromHash() {
  const q = new URLSearchParams((location.hash.split("?")[1]) || "");
  return {
    status: q.get("status") || "", type: q.get("type") || "", waiting: q.get("waiting") || "",
    id: q.get("id") || "",
    // ms since the epoch, as the API takes them.
    started_after: q.get("started_after") || "", started_before: q.get("started_before") || "",
  };
}

// A datetime-local value (the browser's local time) from ms, and back.
function localInput(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}
function fromLocalInput(v) { const t = v ? new Date(v).getTime() : NaN; return Number.isFinite(t) ? String(t) : ""; }

function select(name, options, value) {
  return h("select", { name, id: "filter-" + name },
    options.map((o) => h("option", { value: o, selected: o === value }, o || `any ${name}`)));
}

export function runsPage(main) {
  const f = filtersFromHash();
  const form = h("form", { class: "filters", id: "filters" },
    select("status", STATUSES, f.status),
    h("input", { name: "type", id: "filter-type", placeholder: "workflow type", value: f.type }),
    select("waiting", WAITING, f.waiting),
    h("input", { name: "id", id: "filter-id", placeholder: "run id or workflow id", value: f.id, size: 38 }),
    h("label", { class: "when" }, "started after ", h("input", { type: "datetime-local", name: "after", id: "filter-after", value: localInput(f.started_after) })),
    h("label", { class: "when" }, "before ", h("input", { type: "datetime-local", name: "before", id: "filter-before", value: localInput(f.started_before) })),
    h("button", { type: "submit" }, "Filter"));
  const body = h("tbody", { id: "runs-body" });
  const table = h("table", { class: "runs", id: "runs" },
    h("thead", {}, h("tr", {}, ["Run", "Type", "Workflow id", "Status", "Started", "Duration", "Steps", "Tokens", "Cost", "Waiting on"].map((c) => h("th", {}, c)))),
    body);
  const live = h("span", { class: "live", id: "live" }, "connecting…");
  const more = h("button", { class: "secondary", id: "more", hidden: true }, "Next page");
  main.append(h("section", {}, h("div", { class: "head" }, h("h1", {}, "Runs"), live), form, table, more));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      if (k === "after" || k === "before") { const ms = fromLocalInput(v); if (ms) q.set("started_" + k, ms); continue; }
      q.set(k, String(v).trim());
    }
    location.hash = "#/runs" + (q.toString() ? "?" + q : "");
  });

  function row(r) {
    const u = r.usage || {};
    const end = r.closed_ms || Date.now();
    return h("tr", { "data-run": r.run_id, class: "s-row-" + r.status },
      h("td", { class: "mono" }, h("a", { href: "#/run/" + encodeURIComponent(r.run_id) }, r.run_id.slice(0, 8) + "…" + r.run_id.slice(-4))),
      h("td", {}, r.workflow_type),
      h("td", { class: "mono small" }, r.workflow_id === r.run_id ? "" : r.workflow_id),
      h("td", {}, statusBadge(r.status), r.cancel_requested && r.status === "running" ? " (cancelling)" : ""),
      h("td", { title: r.started || "" }, ago(r.started_ms)),
      h("td", {}, duration(end - r.started_ms)),
      h("td", { class: "num" }, String(u.activities || 0)),
      h("td", { class: "num" }, String(tokens(u))),
      h("td", { class: "num cost" }, usd(u.cost_micros)),
      h("td", { class: "waiting" }, waitingSummary(r)));
  }

  function show(page, append) {
    if (!append) body.replaceChildren();
    body.append(...page.runs.map(row));
    if (!page.runs.length && !append) body.append(h("tr", {}, h("td", { colspan: 10, class: "empty" }, "No runs match.")));
    more.hidden = !page.next_page_token;
    more.onclick = async () => {
      try { show(await api.get("/runs", { ...f, page_token: page.next_page_token }), true); }
      catch (e) { banner(e.message); }
    };
  }

  // The first page is live; pages after it are loaded on demand and stay as loaded.
  const stop = api.stream("/runs/live", f, (ev) => {
    live.textContent = "live";
    live.classList.add("on");
    if (body.dataset.paged !== "1") show(ev.data, false);
  }, { onError: (e) => { live.textContent = "stopped"; banner(e.message); } });
  more.addEventListener("click", () => { body.dataset.paged = "1"; });
  return stop;
}
