// One execution, as an operator needs it to act: where it is, what it
// waits for and until when, what happened (the status log as a timeline),
// what the partner sent, the result delivery with every attempt, and the
// output or the error. Polled, so a callback or an action shows without
// reloading; redrawn only when the execution changed, so an opened
// <details> or a selection stays put.

import * as api from "./api.js";
import { h, fill, time, relative, body, badge, facts } from "./dom.js";

const REFRESH_MS = 2000;

export function detailPage(ctx, id) {
  let timer = null;
  let stopped = false;
  let last = null;

  const view = h("div", { class: "detail" }, h("p", { class: "muted" }, "Loading…"));
  fill(ctx.main, h("p", {}, h("a", { href: "#/executions" }, "← Executions")), view);

  async function refresh() {
    try {
      const exec = await api.get(`/v1/executions/${encodeURIComponent(id)}`);
      if (stopped) return;
      const seen = JSON.stringify(exec);
      if (seen !== last) {
        last = seen;
        draw(exec);
      }
    } catch (e) {
      if (ctx.onAuthLost(e)) return;
      fill(view, h("p", { class: "flash error", role: "alert" }, `Could not load execution ${id}: ${e.message}`));
    }
    // One timer at a time, also when an action refreshed meanwhile.
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  function draw(exec) {
    fill(view,
      h("h1", {}, "Execution ", h("span", { class: "mono" }, exec.id), " ", badge(exec.state)),
      facts([
        ["Workflow", exec.workflow],
        ["Step", `${exec.step} (${exec.step_index + 1} of ${exec.steps.length}), attempt ${exec.attempt}`],
        ["Started", time(exec.created_ms)],
        ["Updated", time(exec.updated_ms)],
      ]),
      actions(ctx, exec, refreshNow),
      waitSection(exec),
      outcome(exec),
      section("Steps", stepsList(exec)),
      section("Status log", timeline(exec.status_log)),
      callbacksSection(exec.callbacks),
      deliverySection(exec.delivery));
  }

  function refreshNow() {
    clearTimeout(timer);
    refresh();
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function section(title, ...content) {
  return h("section", {}, h("h2", {}, title), ...content);
}

// Retry, skip, cancel: only for a token that may act, only those the
// execution's state allows, each confirmed with what it will do.
function actions(ctx, exec, refresh) {
  if (!ctx.session.canAct) return null;
  const next = exec.steps[exec.step_index + 1];
  const possible = [];
  if (exec.state === "failed") {
    possible.push(["retry", "Retry", [
      `Step “${exec.step}” runs again as attempt ${exec.attempt + 1}, with the same step-run-id, on the plugin's current version.`,
    ]]);
    possible.push(["skip", "Skip", [
      next ? `Step “${exec.step}” is passed over: its input goes on to step “${next.name}”.`
        : `Step “${exec.step}” is passed over: the execution completes with that step's input as its output.`,
    ]]);
  }
  if (exec.state === "running" || exec.state === "suspended") {
    possible.push(["cancel", "Cancel", [
      `The execution fails with code “cancelled” at step “${exec.step}”; no later step runs.`,
      exec.wait?.for === "callback" ? "A callback that arrives afterwards is refused (410)." : null,
    ].filter(Boolean)]);
  }
  if (possible.length === 0) return null;
  return h("div", { class: "actions" }, ...possible.map(([action, label, lines]) =>
    h("button", { type: "button", class: action === "cancel" ? "danger" : null, "data-testid": `action-${action}`, onclick: async () => {
      if (!(await ctx.confirmAction(`${label} execution ${exec.id}?`, lines, label))) return;
      try {
        const done = await api.post(`/v1/executions/${encodeURIComponent(exec.id)}/${action}`);
        ctx.flash(`${label}: the execution is ${done.state} at step ${done.step}.`, "ok");
      } catch (e) {
        if (!ctx.onAuthLost(e)) ctx.flash(`${label} refused: ${e.message}`, "error");
      }
      refresh();
    } }, `${label}…`)));
}

// What a suspended execution waits for, with the deadline, and the shape
// of the callback a partner would send: the URL without its secret, which
// only the partner holds (a placeholder stands in for it).
function waitSection(exec) {
  const w = exec.wait;
  if (!w) return null;
  const rows = [
    ["Waits for", w.for === "callback" ? "a callback from the partner" : "a retry timer"],
    ["Until", h("span", {}, time(w.until_ms), " ", h("span", { class: "muted" }, `(${relative(w.until_ms)})`))],
    ["Step", `${w.step}, attempt ${w.attempt}`],
    ["Step run", h("span", { class: "mono" }, w.step_run_id)],
    ["Correlation id", w.correlation_id ? h("span", { class: "mono" }, w.correlation_id) : null],
    ["Callback URL", w.callback_url ? h("span", { class: "mono break" }, w.callback_url) : null],
  ];
  const content = [facts(rows)];
  if (w.callback_url) {
    const curl = `curl -X POST '${w.callback_url}?secret=<SECRET>' \\\n  -H 'Content-Type: application/json' \\\n  --data '{}'`;
    const pre = h("pre", { class: "body", "data-testid": "curl" }, curl);
    const copy = h("button", { type: "button", onclick: async () => {
      try {
        await navigator.clipboard.writeText(curl);
        fill(copy, "Copied");
      } catch {
        // No clipboard (a page over plain HTTP from elsewhere): select it.
        getSelection().selectAllChildren(pre);
        fill(copy, "Selected: copy it with Ctrl+C");
      }
    } }, "Copy as curl");
    content.push(h("p", { class: "muted" }, "The callback's shape; <SECRET> is the secret only the partner was given."), pre, copy);
  }
  return h("section", { class: "wait", "data-testid": "wait" }, h("h2", {}, "Current wait"), ...content);
}

function outcome(exec) {
  if (exec.error) {
    const e = exec.error;
    return h("section", { class: "error", "data-testid": "error" }, h("h2", {}, "Error"), facts([
      ["Error code", h("span", { class: "mono" }, e.code)],
      ["Error text", body(e.text, "error text")],
      ["Document status", e.document_status],
      ["Technical status", e.technical_status],
      ["Step", e.step],
    ]));
  }
  if (exec.output !== null && exec.output !== undefined) {
    return h("section", { "data-testid": "output" }, h("h2", {}, "Output"),
      exec.output_content_type ? h("p", { class: "muted" }, exec.output_content_type) : null,
      body(exec.output, "output"));
  }
  return null;
}

function stepsList(exec) {
  return h("ol", { class: "steps" }, ...exec.steps.map((s, i) =>
    h("li", { class: i === exec.step_index ? "current" : null },
      h("strong", {}, s.name), ` — plugin ${s.plugin}`,
      s.plugin_hash ? h("span", { class: "mono muted", title: s.plugin_hash }, ` @${s.plugin_hash.slice(0, 12)}`) : h("span", { class: "muted" }, " (not started)"),
      i === exec.step_index ? h("span", { class: "muted" }, " ← here") : null)));
}

function timeline(log) {
  return h("ol", { class: "timeline" }, ...log.map((e) =>
    h("li", { "data-state": e.to },
      h("div", { class: "when" }, time(e.time_ms)),
      h("div", {}, h("strong", {}, e.event), ` · ${e.step} #${e.attempt} · ${e.from} → ${e.to}`),
      e.error_code ? h("div", { class: "mono" }, e.error_code) : null,
      e.error_text ? body(e.error_text, "text") : null)));
}

function callbacksSection(callbacks) {
  if (!callbacks?.length) return null;
  return section("Callbacks", ...callbacks.map((c) => h("div", { class: "callback" },
    facts([
      ["Correlation id", h("span", { class: "mono" }, c.correlation_id)],
      ["State", badge(c.state)],
      ["Attempt", String(c.attempt)],
      ["Registered", time(c.created_ms)],
      ["Needs a token", c.require_token ? "yes" : null],
    ]),
    c.received ? received(c.received) : null)));
}

// A callback the partner sent: headers (credentials already masked by the
// API) and body, all as text.
function received(r) {
  return h("div", { class: "received" },
    h("p", {}, `Received ${r.method}, ${r.body_bytes} bytes${r.body_truncated ? " (first 4 KiB shown)" : ""}, `, time(r.received_ms)),
    h("table", { class: "headers" }, h("tbody", {}, ...r.headers.map(([name, value]) =>
      h("tr", {}, h("th", { class: "mono" }, name), h("td", { class: "mono break" }, value))))),
    body(r.body));
}

function deliverySection(d) {
  if (!d) return null;
  return section("Result delivery",
    facts([
      ["To", h("span", { class: "mono break" }, d.url)],
      ["State", badge(d.state)],
      ["Webhook id", h("span", { class: "mono" }, d.webhook_id)],
      ["Next attempt", d.next_attempt_ms ? time(d.next_attempt_ms) : null],
    ]),
    d.attempts?.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Attempt", "Time", "Duration", "Status", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...d.attempts.map((a, i) => h("tr", {},
        h("td", {}, String(i + 1)), h("td", {}, time(a.time_ms)), h("td", {}, `${a.duration_ms} ms`),
        h("td", {}, a.status === null || a.status === undefined ? "—" : String(a.status)),
        h("td", {}, a.error ? body(a.error, "error") : "")))))) : h("p", { class: "muted" }, "No attempt yet."));
}
