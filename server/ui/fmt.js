// Small formatting and DOM helpers. Text always goes in as text nodes (never as HTML).

/** An element: h("td", {class: "x", onclick: f}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Dollars from micro-dollars, 4 decimals. */
export function usd(micros) { return "$" + ((Number(micros) || 0) / 1e6).toFixed(4); }

export function duration(ms) {
  ms = Math.max(0, Math.round(ms));
  if (ms < 1000) return ms + "ms";
  const s = Math.floor(ms / 1000);
  if (s < 60) return (ms / 1000).toFixed(1) + "s";
  const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (d > 0) return `${d}d ${h % 24}h`;
  if (h > 0) return `${h}h ${m % 60}m`;
  return `${m}m ${s % 60}s`;
}

export function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function ago(ms, now = Date.now()) { return ms ? duration(now - ms) + " ago" : ""; }

export function tokens(u) { return (u.input_tokens || 0) + (u.output_tokens || 0); }

/** One waiting-on entry in a few words. */
export function waiting(w) {
  switch (w.kind) {
    case "activity": return `activity #${w.activity_id} ${w.activity_type} (attempt ${w.attempt}, ${w.state})`;
    case "timer": return `timer #${w.timer_id} until ${w.fire_at}`;
    case "signal": return `signal "${w.name}"` + (w.question ? `: ${w.question}` : "");
    case "budget": return `budget: ${w.dimension} ${w.used}/${w.limit}`;
    case "reconciliation": return `reconciliation of #${w.activity_id} ${w.activity_type}`;
    case "approval": return `approval of #${w.activity_id} ${w.activity_type}: ${w.reason}`;
    case "workflow_task": return w.held_reason ? `held: ${w.held_reason}` : "workflow task";
    case "child": return `child ${w.workflow_type} (${w.state})`;
    case "idle": return "idle";
    default: return w.kind;
  }
}

export function waitingSummary(run) {
  return (run.waiting_on || []).map(waiting).join("; ") || "—";
}

/** A button that copies `text()` to the clipboard. */
export function copyButton(text, label = "copy") {
  const b = h("button", { class: "copy secondary", type: "button", title: "copy to the clipboard" }, label);
  b.addEventListener("click", async () => {
    const t = typeof text === "function" ? text() : text;
    try { await navigator.clipboard.writeText(t); b.textContent = "copied"; }
    catch (_) {
      const area = h("textarea", {}, t); document.body.append(area); area.select();
      document.execCommand("copy"); area.remove(); b.textContent = "copied";
    }
    setTimeout(() => { b.textContent = label; }, 1200);
  });
  return b;
}

export function statusBadge(status) { return h("span", { class: "status s-" + status }, status); }
