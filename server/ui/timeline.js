// The waterfall: one row per activity, one bar per attempt (queued: pale, running: solid,
// failed or timed out: red), and one row per child run (requested to closed; a click opens
// it), so parallel work, retries and the gaps between them show.

import { h, duration } from "./fmt.js";

/** Activities from history events: {id, type, scheduled, attempts: [{attempt, start, end, outcome}]}. */
export function activities(events) {
  const acts = new Map();
  const get = (id) => {
    if (!acts.has(id)) acts.set(id, { id, type: "", scheduled: null, attempts: [], usage: { input_tokens: 0, output_tokens: 0, cost_micros: 0 }, seqs: {} });
    return acts.get(id);
  };
  for (const e of events) {
    const a = e.attributes || {};
    const id = a.activity_id;
    if (id === undefined) continue;
    const act = get(id);
    switch (e.kind) {
      case "ActivityScheduled":
        act.type = a.activity_type; act.scheduled = e.time_ms; act.seqs.scheduled = e.seq; break;
      case "ActivityStarted":
        act.attempts.push({ attempt: a.attempt, start: e.time_ms, end: null, outcome: "running", queuedFrom: act.lastEnd ?? act.scheduled });
        break;
      case "ActivityCompleted":
      case "ActivityFailed":
      case "ActivityTimedOut":
      case "ActivityCancelled":
      case "ActivityOutcomeUnknown": {
        const outcome = { ActivityCompleted: "completed", ActivityFailed: "failed", ActivityTimedOut: "timed_out", ActivityCancelled: "cancelled", ActivityOutcomeUnknown: "unknown" }[e.kind];
        const at = act.attempts.find((x) => x.attempt === a.attempt && x.end === null) || act.attempts[act.attempts.length - 1];
        if (at) { at.end = e.time_ms; at.outcome = outcome; } else act.attempts.push({ attempt: a.attempt, start: e.time_ms, end: e.time_ms, outcome });
        act.lastEnd = e.time_ms;
        if (e.kind === "ActivityCompleted") act.seqs.completed = e.seq;
        if (e.kind === "ActivityFailed") act.seqs.failed = e.seq;
        if (a.usage && typeof a.usage === "object") addUsage(act.usage, a.usage);
        break;
      }
      case "ActivityUsageReported":
        if (a.usage) addUsage(act.usage, a.usage);
        break;
      default: break;
    }
  }
  return [...acts.values()].sort((x, y) => x.id - y.id);
}

function addUsage(into, u) {
  into.input_tokens += u.input_tokens || 0;
  into.output_tokens += u.output_tokens || 0;
  into.cost_micros += u.cost_micros || 0;
  if (u.model) into.model = u.model;
}

/** Child runs from history events: {id (command seq), type, runId, start, end, status}. */
export function childRuns(events) {
  const kids = new Map();
  for (const e of events) {
    if (!e.kind.startsWith("ChildRun")) continue;
    const a = e.attributes || {};
    const id = a.command_seq;
    if (!kids.has(id)) kids.set(id, { id, type: "", runId: "", start: e.time_ms, end: null, status: "running" });
    const k = kids.get(id);
    switch (e.kind) {
      case "ChildRunRequested": k.type = a.workflow_type; k.runId = a.child_run_id; k.start = e.time_ms; break;
      case "ChildRunStarted": k.runId = a.run_id || k.runId; break;
      case "ChildRunStartFailed": k.end = e.time_ms; k.status = "failed"; break;
      case "ChildRunClosed": k.end = e.time_ms; k.status = String(a.status || "closed").toLowerCase().replace("run_status_", ""); break;
      default: break;
    }
  }
  return [...kids.values()].sort((x, y) => x.id - y.id);
}

export function timeline(events, now, onPick) {
  const acts = activities(events).filter((a) => a.scheduled !== null || a.attempts.length);
  const kids = childRuns(events);
  if (!acts.length && !kids.length) return h("p", { class: "empty", id: "timeline" }, "No activities or child runs in the loaded events.");
  const t0 = Math.min(...acts.map((a) => a.scheduled ?? a.attempts[0].start), ...kids.map((k) => k.start));
  const t1 = Math.max(now, ...acts.flatMap((a) => a.attempts.map((x) => x.end ?? now)), ...kids.map((k) => k.end ?? now));
  const span = Math.max(1, t1 - t0);
  const pct = (t) => ((t - t0) / span) * 100 + "%";
  const width = (a, b) => Math.max(0.3, ((b - a) / span) * 100) + "%";
  const rows = acts.map((a) => {
    const bars = [];
    if (a.scheduled !== null) {
      const firstStart = a.attempts.length ? a.attempts[0].start : now;
      bars.push(h("div", { class: "bar queued", style: { left: pct(a.scheduled), width: width(a.scheduled, firstStart) }, title: "queued " + duration(firstStart - a.scheduled) }));
    }
    a.attempts.forEach((x, i) => {
      const end = x.end ?? now;
      if (i > 0) {
        const prevEnd = a.attempts[i - 1].end ?? x.start;
        bars.push(h("div", { class: "bar gap", style: { left: pct(prevEnd), width: width(prevEnd, x.start) }, title: "retry backoff " + duration(x.start - prevEnd) }));
      }
      bars.push(h("div", {
        class: "bar attempt o-" + x.outcome, style: { left: pct(x.start), width: width(x.start, end) },
        title: `attempt ${x.attempt}: ${x.outcome}, ${duration(end - x.start)}`,
      }, a.attempts.length > 1 ? String(x.attempt) : ""));
    });
    return { id: a.id, row: h("div", { class: "tl-row", "data-activity": a.id, onclick: () => onPick(a) },
      h("div", { class: "tl-label", title: a.type }, `#${a.id} ${a.type}`),
      h("div", { class: "tl-track" }, bars)) };
  }).concat(kids.map((k) => {
    const end = k.end ?? now;
    const outcome = k.status === "completed" ? "completed" : k.end === null ? "running" : "failed";
    return { id: k.id, row: h("div", { class: "tl-row tl-child", "data-child": k.id, title: "open the child run", onclick: () => { if (k.runId) location.hash = "#/run/" + k.runId; } },
      h("div", { class: "tl-label", title: k.type }, `#${k.id} child ${k.type}`),
      h("div", { class: "tl-track" }, h("div", {
        class: "bar attempt child o-" + outcome, style: { left: pct(k.start), width: width(k.start, end) },
        title: `child run ${k.runId}: ${k.status}, ${duration(end - k.start)}`,
      }))) };
  })).sort((x, y) => x.id - y.id).map((r) => r.row);
  return h("div", { class: "timeline", id: "timeline" },
    h("div", { class: "tl-axis" }, h("span", {}, "0"), h("span", {}, duration(span))),
    rows);
}
