// The plugins: each one's version, where its code comes from, the grant
// that applies to it, its config schema, and the executions waiting on
// it (suspended executions whose current step runs it: the list endpoint's
// plugin filter).

import * as api from "./api.js";
import { h, fill, body, time } from "./dom.js";

const WAITING_SHOWN = 10;

export function pluginsPage(ctx) {
  let stopped = false;
  const view = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  fill(ctx.main, h("h1", {}, "Plugins"), view);

  (async () => {
    try {
      const { plugins } = await api.get("/v1/plugins");
      const details = await Promise.all(plugins.map((p) => Promise.all([
        api.get(`/v1/plugins/${encodeURIComponent(p.name)}`),
        api.get(`/v1/executions${api.query({ state: "suspended", plugin: p.name, limit: WAITING_SHOWN + 1 })}`),
      ])));
      if (stopped) return;
      fill(view, ...details.map(([p, waiting]) => plugin(p, waiting.executions)));
    } catch (e) {
      if (!ctx.onAuthLost(e)) fill(view, h("p", { class: "flash error", role: "alert" }, `Could not load plugins: ${e.message}`));
    }
  })();
  return () => { stopped = true; };
}

function plugin(p, waiting) {
  const g = p.grant ?? {};
  const hosts = g.allowed_hosts?.length ? g.allowed_hosts.join(", ") : "none (no network)";
  return h("section", { class: "plugin", "data-testid": "plugin", "data-name": p.name },
    h("h2", {}, p.name, " ", h("span", { class: "muted" }, `v${p.version}`)),
    p.description ? h("p", {}, p.description) : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Version"), h("dd", { class: "mono", title: p.hash }, `${p.version} @${p.hash.slice(0, 12)}`),
      h("dt", {}, "Source"), h("dd", {}, `${p.source}, ${p.size} bytes`),
      h("dt", {}, "Grant"), h("dd", {}, g.section ? h("code", {}, g.section) : "no [plugins] section: the defaults"),
      h("dt", {}, "Hosts"), h("dd", { class: "mono break" }, hosts),
      h("dt", {}, "Secrets"), h("dd", { class: "mono" }, g.secrets?.length ? g.secrets.join(", ") : "none"),
      h("dt", {}, "Limits"), h("dd", {}, g.limits ? `${g.limits.memory_mb} MiB, ${g.limits.time_limit_ms} ms per call, bodies up to ${g.limits.max_body_bytes} bytes` : "—"),
      h("dt", {}, "Waiting"), h("dd", {}, waitingList(p.name, waiting))),
    h("h3", {}, "Config schema"),
    p.config_schema ? body(p.config_schema, "schema") : h("p", { class: "muted" }, "None: the plugin takes any config."));
}

function waitingList(name, waiting) {
  if (waiting.length === 0) return "no suspended execution";
  const more = waiting.length > WAITING_SHOWN;
  return h("div", {},
    h("a", { href: `#/executions${api.query({ state: "suspended", plugin: name })}` },
      `${more ? `${WAITING_SHOWN}+` : waiting.length} suspended on it`),
    h("ul", { class: "waiting" }, ...waiting.slice(0, WAITING_SHOWN).map((e) =>
      h("li", {}, h("a", { href: `#/executions/${encodeURIComponent(e.id)}`, class: "mono" }, e.id), " ", time(e.updated_ms)))));
}
