// Building the page's elements. Everything here sets text, never HTML:
// what a partner or a plugin sent (callback bodies and headers, error
// texts, outputs) is shown exactly as it was sent and can never become
// markup or script. Attributes are limited to a known set, and links to
// the console's own routes.

const ATTRIBUTES = new Set([
  "class", "id", "type", "title", "for", "name", "value", "placeholder",
  "datetime", "role", "aria-live", "aria-pressed", "aria-label", "aria-current",
  "autocomplete", "spellcheck", "colspan", "open", "hidden", "disabled",
  "required", "data-state", "data-testid", "data-label", "data-name",
]);

// h("p", {class: "x", onclick: fn}, "text", child, ...): an element whose
// string children become text nodes.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "href") {
      // Only the console's own routes: nothing a partner sent becomes a link.
      if (typeof value !== "string" || !value.startsWith("#/")) throw new Error(`refused link ${value}`);
      el.setAttribute("href", value);
    } else if (ATTRIBUTES.has(key)) {
      el.setAttribute(key, value === true ? "" : String(value));
    } else {
      throw new Error(`refused attribute ${key}`);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replaces everything in `el` with `children`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A time in the reader's local time, with UTC on hover.
export function time(ms) {
  if (ms === null || ms === undefined) return h("span", { class: "muted" }, "—");
  const d = new Date(ms);
  return h("time", { datetime: d.toISOString(), title: `${d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")}` },
    d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }));
}

// "in 4 min", "12 s ago".
export function relative(ms, now = Date.now()) {
  const s = Math.round((ms - now) / 1000);
  const abs = Math.abs(s);
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min`
    : abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} days`;
  return s >= 0 ? `in ${span}` : `${span} ago`;
}

// A body or document: shown as is when short, folded in <details> when long.
const FOLD_LINES = 8;
const FOLD_CHARS = 600;
export function body(value, label = "body") {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  const pre = h("pre", { class: "body" }, text ?? "");
  const lines = (text ?? "").split("\n").length;
  if (lines <= FOLD_LINES && (text ?? "").length <= FOLD_CHARS) return pre;
  return h("details", { class: "fold" },
    h("summary", {}, `${label}: ${lines} lines, ${(text ?? "").length} characters`), pre);
}

// A state as a badge that CSS colours by `data-state`.
export function badge(state) {
  return h("span", { class: "badge", "data-state": state }, state);
}

// Term/definition pairs, skipping empty ones.
export function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(h("dt", {}, term), h("dd", {}, value));
  }
  return dl;
}
