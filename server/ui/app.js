// The single page: a router on the URL's hash (#/runs, #/run/ID, #/inbox), the sign-in
// dialog, and the confirmation every operator action goes through.

import * as api from "./api.js";
import { h } from "./fmt.js";
import { runsPage } from "./runs.js";
import { runPage } from "./run.js";
import { inboxPage } from "./inbox.js";

let session = { auth: false, read_only: false };
let stopPage = () => {};

export function isReadOnly() { return session.read_only; }

/**
 * Asks before an action. `fields` are inputs shown in the dialog; `act(values)` runs on
 * confirm and its error is shown in the dialog. Resolves with act's result, or null.
 */
export function confirmAction({ title, text, fields = [], ok = "Confirm", act }) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text || "";
  document.getElementById("confirm-error").textContent = "";
  const box = document.getElementById("confirm-fields");
  box.replaceChildren(...fields.map((f) => h("label", { class: "field" }, f.label,
    f.type === "textarea"
      ? h("textarea", { name: f.name, rows: 4 }, f.value || "")
      : h("input", { name: f.name, value: f.value || "", type: f.type || "text" }))));
  const okBtn = document.getElementById("confirm-ok");
  okBtn.textContent = ok;
  return new Promise((resolve) => {
    const form = document.getElementById("confirm-form");
    const cancel = document.getElementById("confirm-cancel");
    const done = (v) => { form.onsubmit = null; cancel.onclick = null; dlg.close(); resolve(v); };
    cancel.onclick = () => done(null);
    form.onsubmit = async (e) => {
      e.preventDefault();
      const values = {};
      for (const el of box.querySelectorAll("input,textarea")) values[el.name] = el.value;
      okBtn.disabled = true;
      try { done(await act(values)); }
      catch (err) { document.getElementById("confirm-error").textContent = err.message; }
      finally { okBtn.disabled = false; }
    };
    dlg.showModal();
  });
}

export function banner(text, kind = "error") {
  const b = document.getElementById("banner");
  if (!text) { b.hidden = true; return; }
  b.className = "banner " + kind;
  b.textContent = text;
  b.hidden = false;
}

function login(message) {
  const dlg = document.getElementById("login");
  document.getElementById("login-error").textContent = message || "";
  if (dlg.open) return;
  dlg.showModal();
}

async function loadSession() {
  try {
    session = await api.get("/session");
    document.getElementById("who").textContent =
      (session.name ? `${session.name} (${session.role})` : "") + (session.read_only ? " · read-only" : "");
    document.getElementById("logout").hidden = !session.auth;
    document.body.classList.toggle("read-only", !!session.read_only);
    return true;
  } catch (e) {
    if (e.status !== 401) banner(e.message);
    return false;
  }
}

async function refreshInboxCount() {
  try {
    const inbox = await api.get("/inbox");
    const n = inbox.signals.length + inbox.reconciliations.length;
    const c = document.getElementById("inbox-count");
    c.textContent = String(n);
    c.hidden = n === 0;
  } catch (_) { /* shown by the page */ }
}

function route() {
  stopPage();
  stopPage = () => {};
  banner(null);
  const main = document.getElementById("main");
  main.replaceChildren();
  const hash = location.hash || "#/runs";
  const [, page, arg] = hash.split("/");
  document.getElementById("nav-runs").classList.toggle("active", page === "runs" || page === "run");
  document.getElementById("nav-inbox").classList.toggle("active", page === "inbox");
  if (page === "run" && arg) stopPage = runPage(main, decodeURIComponent(arg));
  else if (page === "inbox") stopPage = inboxPage(main, refreshInboxCount);
  else stopPage = runsPage(main);
}

async function start() {
  api.whenUnauthorized((m) => login(m));
  const ns = document.getElementById("namespace");
  ns.value = api.namespace();
  ns.addEventListener("change", () => { api.setNamespace(ns.value.trim()); route(); refreshInboxCount(); });
  document.getElementById("logout").addEventListener("click", () => { api.setToken(""); location.reload(); });
  document.getElementById("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    api.setToken(document.getElementById("login-token").value.trim());
    if (await loadSession()) {
      document.getElementById("login").close();
      route();
      refreshInboxCount();
    }
  });
  window.addEventListener("hashchange", route);
  if (await loadSession()) {
    route();
    refreshInboxCount();
    setInterval(refreshInboxCount, 5000);
  }
}

start();
