// The console's shell: sign-in, the header, the routes (#/executions,
// #/executions/ID, #/plugins) and the confirmation dialog the actions
// share. Each page is a function that draws into <main> and returns how
// to stop its polling when the operator goes elsewhere.

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import { listPage } from "./list.js";
import { detailPage } from "./detail.js";
import { pluginsPage } from "./plugins.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const nav = document.getElementById("nav");
const flashBox = document.getElementById("flash");
let stopPage = () => {};

// What the signed-in token may do, from GET /v1/whoami.
export const session = { me: null, get canAct() { return this.me?.permissions?.includes("admin") ?? false; } };

// A short message for the operator (the outcome of an action, an error).
export function flash(message, kind = "info") {
  fill(flashBox, message ? h("p", { class: `flash ${kind}` }, message) : null);
}

// Asks before an action: `lines` say what will happen. Resolves to true
// only when the operator confirms. A real <dialog>: focus moves into it,
// Escape cancels, Tab stays inside.
export function confirmAction(title, lines, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-label": title });
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    const cancel = h("button", { type: "button", onclick: () => done(false) }, "Cancel");
    dialog.append(
      h("h2", {}, title),
      ...lines.map((line) => h("p", {}, line)),
      h("div", { class: "buttons" },
        cancel,
        h("button", { type: "button", class: "danger", "data-testid": "confirm", onclick: () => done(true) }, confirmLabel)),
    );
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

function signInForm(message) {
  stopPage();
  fill(who);
  fill(nav);
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true, placeholder: "sht_…" });
  const form = h("form", { class: "signin", onsubmit: async (e) => {
    e.preventDefault();
    api.signIn(input.value.trim());
    await start();
  } },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API token (", h("code", {}, "stephost token create"), "). It is kept in this tab only, until you sign out or close it."),
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    message ? h("p", { class: "flash error", role: "alert" }, message) : null,
  );
  fill(main, form);
  input.focus();
}

function header() {
  const me = session.me;
  const name = me.name ?? "auth off";
  fill(who,
    h("span", { "data-testid": "whoami" }, `${name} · ${session.canAct ? "admin" : "read-only"}`),
    h("button", { type: "button", class: "link", onclick: () => { api.signOut(); session.me = null; signInForm("Signed out."); } }, "Sign out"));
  const here = location.hash.startsWith("#/plugins") ? "plugins" : "executions";
  fill(nav,
    h("a", { href: "#/executions", "aria-current": here === "executions" ? "page" : null }, "Executions"),
    h("a", { href: "#/plugins", "aria-current": here === "plugins" ? "page" : null }, "Plugins"));
}

// The route in the fragment: "#/executions?state=failed" → ["executions", null, params].
function route() {
  const [path, q] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  return { page: parts[0] ?? "executions", id: parts[1] ? decodeURIComponent(parts[1]) : null, params: new URLSearchParams(q ?? "") };
}

function show() {
  if (!session.me) return;
  stopPage();
  flash(null);
  header();
  const { page, id, params } = route();
  const ctx = { main, session, flash, confirmAction, onAuthLost };
  if (page === "plugins") stopPage = pluginsPage(ctx);
  else if (page === "executions" && id) stopPage = detailPage(ctx, id);
  else stopPage = listPage(ctx, params);
}

// A token revoked or expired while the page is open: back to sign-in.
function onAuthLost(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    api.signOut();
    session.me = null;
    signInForm(`Signed out: ${error.message}`);
    return true;
  }
  return false;
}

async function start() {
  if (!api.token()) return signInForm();
  try {
    session.me = await api.get("/v1/whoami");
  } catch (e) {
    api.signOut();
    return signInForm(`That token was refused: ${e.message}`);
  }
  show();
}

api.takeTokenFromFragment();
window.addEventListener("hashchange", show);
start();
