// The executions list: filters (state, workflow, plugin, creation time)
// kept in the address so a view can be shared, counts by state (of the
// filter's workflow), cursor paging, polling that the operator can pause,
// and the bulk actions on the current filter.

import * as api from "./api.js";
import { h, fill, time, badge } from "./dom.js";

const STATES = ["running", "suspended", "completed", "failed"];
// The list's filters, as the API names them; times are ms since the epoch.
const FILTERS = ["state", "workflow", "plugin", "created_after", "created_before"];
const PAGE = 50;
const REFRESH_MS = 3000;

// Polling survives page changes within the tab: a paused list stays paused.
let paused = false;

export function listPage(ctx, params) {
  const filter = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? ""]));
  const filtered = FILTERS.some((f) => filter[f]);
  // Cursors of the pages before this one, to go back; the current page's.
  const previous = [];
  let cursor = null;
  let timer = null;
  let stopped = false;

  const counts = h("div", { class: "counts", "data-testid": "counts" });
  const rows = h("tbody", {});
  const pager = h("div", { class: "pager" });
  const refreshed = h("span", { class: "muted", role: "status" });
  const pause = h("button", { type: "button", "aria-pressed": String(paused), onclick: () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    fill(pause, paused ? "Resume auto-refresh" : "Pause auto-refresh");
    schedule();
  } }, paused ? "Resume auto-refresh" : "Pause auto-refresh");

  const stateSelect = h("select", { id: "f-state", name: "state" },
    h("option", { value: "" }, "any state"),
    ...STATES.map((s) => h("option", { value: s }, s)));
  stateSelect.value = filter.state;
  const workflowInput = h("input", { id: "f-workflow", name: "workflow", value: filter.workflow, placeholder: "any workflow", autocomplete: "off", spellcheck: "false" });
  const pluginInput = h("input", { id: "f-plugin", name: "plugin", value: filter.plugin, placeholder: "any plugin", autocomplete: "off", spellcheck: "false" });
  // Local time in the inputs, as the operator reads it; ms in the address.
  const afterInput = h("input", { id: "f-after", name: "created_after", type: "datetime-local", value: localInput(filter.created_after) });
  const beforeInput = h("input", { id: "f-before", name: "created_before", type: "datetime-local", value: localInput(filter.created_before) });
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/executions${api.query({
      state: stateSelect.value,
      workflow: workflowInput.value.trim(),
      plugin: pluginInput.value.trim(),
      created_after: fromInput(afterInput.value),
      created_before: fromInput(beforeInput.value),
    })}`;
  } },
    h("label", { for: "f-state" }, "State"), stateSelect,
    h("label", { for: "f-workflow" }, "Workflow"), workflowInput,
    h("label", { for: "f-plugin" }, "Plugin"), pluginInput,
    h("label", { for: "f-after", title: "created at or after, in local time" }, "Created from"), afterInput,
    h("label", { for: "f-before", title: "created before, in local time" }, "to"), beforeInput,
    h("button", { type: "submit" }, "Apply"),
    filtered ? h("a", { href: "#/executions", class: "button-like" }, "Clear") : null,
  );

  const bulk = h("div", { class: "bulk" });
  if (ctx.session.canAct && filtered) {
    bulk.append(
      h("button", { type: "button", class: "danger", onclick: () => bulkAction(ctx, "cancel", filter, refresh) }, "Cancel all matching…"),
      h("button", { type: "button", onclick: () => bulkAction(ctx, "retry", filter, refresh) }, "Retry all matching…"));
  }

  fill(ctx.main,
    h("h1", {}, "Executions"),
    counts,
    form,
    h("div", { class: "toolbar" }, pause, refreshed, bulk),
    h("div", { class: "table-wrap" },
      h("table", { class: "executions" },
        h("thead", {}, h("tr", {}, ...["Execution", "Workflow", "Step", "Plugin", "State", "Updated"].map((t) => h("th", {}, t)))),
        rows)),
    pager);

  async function refresh() {
    try {
      const [page, byState] = await Promise.all([
        api.get(`/v1/executions${api.query({ ...filter, limit: PAGE, cursor })}`),
        api.get(`/v1/executions/counts${api.query({ workflow: filter.workflow })}`),
      ]);
      if (stopped) return;
      drawCounts(byState);
      drawRows(page.executions);
      drawPager(page.next_cursor);
      fill(refreshed, `updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      if (!ctx.onAuthLost(e)) ctx.flash(`Could not load executions: ${e.message}`, "error");
    }
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    if (!paused && !stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  function drawCounts(c) {
    fill(counts, ...STATES.map((s) =>
      h("a", { href: `#/executions${api.query({ ...filter, state: s })}`, class: "count", "data-state": s, "aria-current": filter.state === s ? "true" : null },
        h("span", { class: "n" }, String(c.by_state?.[s] ?? 0)), " ", s)),
    h("span", { class: "count total" }, h("span", { class: "n" }, String(c.total ?? 0)), filter.workflow ? ` of ${filter.workflow}` : " in all"));
  }

  function drawRows(items) {
    if (items.length === 0) {
      fill(rows, h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No executions match.")));
      return;
    }
    // data-label names the column when a narrow window shows rows as cards.
    fill(rows, ...items.map((e) => h("tr", { "data-testid": "execution-row" },
      h("td", { "data-label": "Execution" }, h("a", { href: `#/executions/${encodeURIComponent(e.id)}`, class: "mono" }, e.id)),
      h("td", { "data-label": "Workflow" }, e.workflow),
      h("td", { "data-label": "Step" }, e.step),
      h("td", { "data-label": "Plugin" }, e.plugin ?? ""),
      h("td", { "data-label": "State" }, badge(e.state)),
      h("td", { "data-label": "Updated" }, time(e.updated_ms)))));
  }

  function drawPager(next) {
    fill(pager,
      h("button", { type: "button", disabled: previous.length === 0, onclick: () => { cursor = previous.pop() ?? null; refresh(); } }, "← Newer"),
      h("span", { class: "muted" }, `page ${previous.length + 1}`),
      h("button", { type: "button", disabled: !next, onclick: () => { previous.push(cursor); cursor = next; refresh(); } }, "Older →"));
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

// Bulk cancel or retry on `filter`: a dry run first, so that the
// confirmation says how many executions it will change and how many it
// will pass over; then the action itself, and what it did.
async function bulkAction(ctx, action, filter, refresh) {
  const body = { dry_run: true };
  for (const f of FILTERS) {
    if (filter[f]) body[f] = f.startsWith("created_") ? Number(filter[f]) : filter[f];
  }
  let dry;
  try {
    dry = await api.post(`/v1/executions/${action}`, body);
  } catch (e) {
    if (!ctx.onAuthLost(e)) ctx.flash(`Could not ask what ${action} would do: ${e.message}`, "error");
    return;
  }
  const described = [
    filter.state && `state ${filter.state}`,
    filter.workflow && `workflow ${filter.workflow}`,
    filter.plugin && `plugin ${filter.plugin}`,
    filter.created_after && `created from ${new Date(Number(filter.created_after)).toLocaleString()}`,
    filter.created_before && `created before ${new Date(Number(filter.created_before)).toLocaleString()}`,
  ].filter(Boolean).join(", ");
  const verb = action === "cancel" ? "cancelled (they fail with code cancelled)" : "retried (their failed step runs again)";
  const lines = [
    `${dry.matched} executions match the filter (${described}).`,
    `${dry.changed} would be ${verb}.`,
  ];
  if (dry.skipped > 0) {
    const why = Object.entries(dry.skipped_by_code).map(([code, n]) => `${n} ${code}`).join(", ");
    lines.push(`${dry.skipped} would be left as they are (${why}).`);
  }
  if (dry.changed === 0) {
    ctx.flash(`Nothing to ${action}: ${lines.join(" ")}`);
    return;
  }
  const label = `${action === "cancel" ? "Cancel" : "Retry"} ${dry.changed}`;
  if (!(await ctx.confirmAction(`${action === "cancel" ? "Cancel" : "Retry"} executions?`, lines, label))) return;
  try {
    const done = await api.post(`/v1/executions/${action}`, { ...body, dry_run: false });
    ctx.flash(`${action === "cancel" ? "Cancelled" : "Retried"} ${done.changed} of ${done.matched}; ${done.skipped} left as they were.`, "ok");
  } catch (e) {
    if (!ctx.onAuthLost(e)) ctx.flash(`${action} failed: ${e.message}`, "error");
  }
  refresh();
}

// A datetime-local input's value (local time) for ms since the epoch.
function localInput(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// Ms since the epoch for a datetime-local input's value, "" for none.
function fromInput(value) {
  if (!value) return "";
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? "" : String(ms);
}
