// The JSON API and its event streams. The token lives in sessionStorage (this tab only) and
// goes out as an Authorization header; no cookies, so other sites cannot act as the user.

const TOKEN_KEY = "steadfast.token";
const NS_KEY = "steadfast.namespace";

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
}
export function namespace() { return sessionStorage.getItem(NS_KEY) || "default"; }
export function setNamespace(ns) { sessionStorage.setItem(NS_KEY, ns || "default"); }

/** An API refusal, with the server's message. */
export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

/** `path` with the namespace and `params` (empty values left out) as its query. */
export function url(path, params = {}) {
  const q = new URLSearchParams();
  const ns = namespace();
  if (ns && ns !== "default") q.set("namespace", ns);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return "/api/v1" + path + (s ? "?" + s : "");
}

async function check(resp) {
  if (resp.ok) return resp;
  let code = "http_" + resp.status, message = resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) { code = body.error.code; message = body.error.message; }
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) onUnauthorized(message);
  throw new ApiError(resp.status, code, message);
}

export async function get(path, params) {
  const resp = await fetch(url(path, params), { headers: headers() });
  return (await check(resp)).json();
}

export async function post(path, body) {
  const resp = await fetch(url(path), {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body || {}),
  });
  return (await check(resp)).json();
}

/** Fetches `path` and hands it to the browser as a file (a link cannot send the header). */
export async function download(path, params, filename) {
  const resp = await check(await fetch(url(path, params), { headers: headers() }));
  const blob = await resp.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

/**
 * Follows a server-sent-event stream with the token as a header (EventSource cannot send
 * one), reconnecting after a drop with the last id seen as Last-Event-ID, so nothing is
 * lost or shown twice. `onEvent({id, event, data})`; returns a function that stops it.
 */
export function stream(path, params, onEvent, { lastEventId = null, onEnd = () => {}, onError = () => {} } = {}) {
  let stopped = false;
  let controller = null;
  let last = lastEventId;
  async function once() {
    controller = new AbortController();
    const h = headers({ Accept: "text/event-stream" });
    if (last !== null) h["Last-Event-ID"] = String(last);
    const resp = await check(await fetch(url(path, params), { headers: h, signal: controller.signal }));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = { id: null, event: "message", data: "" };
        for (const line of block.split("\n")) {
          if (line.startsWith("id:")) ev.id = line.slice(3).trim();
          else if (line.startsWith("event:")) ev.event = line.slice(6).trim();
          else if (line.startsWith("data:")) ev.data += line.slice(5).replace(/^ /, "");
        }
        if (!ev.data) continue;
        ev.data = JSON.parse(ev.data);
        if (ev.id !== null) last = ev.id;
        if (ev.event === "end") { onEnd(); return true; }
        if (ev.event === "error") { onError(new ApiError(0, ev.data.error.code, ev.data.error.message)); return true; }
        onEvent(ev);
      }
    }
  }
  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        if (await once()) return;
        delay = 500;
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) { onError(e); return; }
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => { stopped = true; if (controller) controller.abort(); };
}
