// tandem viz dashboard: polls /api/state and redraws. Text from the
// clusters goes in with textContent only, never as HTML.
"use strict";

let refreshMs = 1000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function aliveText(alive) {
  if (alive === true) return el("span", { class: "ok" }, "alive");
  if (alive === false) return el("span", { class: "error" }, "dead");
  return el("span", { class: "muted" }, "unknown");
}

function ms(v) {
  return v === null || v === undefined ? "-" : v + "ms";
}

function stateClass(state) {
  return { primary: "ok", failover: "warn", "no-ready-backends": "error", invalid: "error" }[state] || "muted";
}

function splits(ctx, section) {
  if (section.error) return el("p", { class: "error section-error" }, section.error);
  if (section.rows.length === 0) return el("p", { class: "muted" }, "No TrafficSplits.");
  const rows = section.rows.map((s) => {
    const id = `${ctx}/${s.namespace}/${s.name}`;
    if (s.error) {
      return el("tr", { "data-split": id, class: "error-row" },
        el("td", {}, `${s.namespace}/${s.name}`),
        el("td", { colspan: 4, class: "error" }, s.error));
    }
    const backends = el("td", {}, ...s.backends.map((b) =>
      el("span", { class: "backend" + (b.active ? " active" : "") },
        b.service + ": ",
        el("span", { class: "weight", "data-weight": `${id}/${b.service}` }, b.weight))));
    const events = el("td", {}, ...s.events.map((e) =>
      el("div", { class: "event" + (e.type === "Warning" ? " warn" : "") },
        `${e.reason}${e.count > 1 ? " ×" + e.count : ""}: ${e.message}`)));
    return el("tr", { "data-split": id },
      el("td", {}, `${s.namespace}/${s.name}`,
        el("div", { class: "muted" }, `${s.service || "?"} · ${s.api_version}`)),
      backends,
      el("td", {},
        el("span", { class: stateClass(s.state), "data-state": id }, s.state),
        el("div", { class: "muted" }, s.primary ? "primary " + s.primary : "")),
      el("td", { class: "muted" }, s.last_transition_time || "-"),
      events);
  });
  return table(["SPLIT", "BACKENDS (WEIGHT)", "STATE", "LAST TRANSITION", "EVENTS"], rows);
}

function gateways(ctx, section) {
  if (section.error) return el("p", { class: "error section-error" }, section.error);
  if (section.rows.length === 0) return el("p", { class: "muted" }, "No Links.");
  const rows = section.rows.map((g) => {
    const id = `${ctx}/${g.namespace}/${g.link}`;
    if (g.error) {
      return el("tr", { "data-link": id, class: "error-row" },
        el("td", {}, `${g.namespace}/${g.link}`),
        el("td", { colspan: 4, class: "error" }, g.error));
    }
    const probes = g.probes.map((p) =>
      el("div", { class: "muted" }, `${p.address}: `, aliveText(p.alive), p.last_error ? ` (${p.last_error})` : ""));
    const conditions = g.conditions.map((c) =>
      el("div", { class: c.status === "True" ? "muted" : "warn" }, `${c.type}=${c.status} ${c.reason}`));
    return el("tr", { "data-link": id },
      el("td", {}, g.target_cluster, el("div", { class: "muted" }, `${g.address}:${g.port}`)),
      el("td", { "data-alive": id }, aliveText(g.alive), ...probes),
      el("td", {}, `${ms(g.latency_ms_p50)} / ${ms(g.latency_ms_p95)} / ${ms(g.latency_ms_p99)}`),
      el("td", {}, `${g.mirrored_services}` + (g.failed_services ? ` (${g.failed_services} failed)` : "")),
      el("td", {}, ...conditions, el("div", { class: "muted" }, g.last_heartbeat_time ? "heartbeat " + g.last_heartbeat_time : "")));
  });
  return table(["CLUSTER", "GATEWAY", "LATENCY P50/P95/P99", "MIRRORED", "STATUS"], rows);
}

function pct(v) {
  return v === null || v === undefined ? "-" : (v * 100).toFixed(2) + "%";
}

function stats(ctx, s) {
  if (s.state === "ok") {
    if (s.rows.length === 0) return el("p", { class: "muted" }, "No traffic found.");
    return table(["SERVICE", "SUCCESS", "RPS"], s.rows.map((r) =>
      el("tr", { "data-service": `${ctx}/${r.namespace}/${r.service}` },
        el("td", {}, `${r.namespace}/${r.service}`),
        el("td", {}, pct(r.success_rate)),
        el("td", {}, r.rps.toFixed(1) + "rps"))));
  }
  if (s.state === "pending") return el("p", { class: "muted stats-state" }, "…");
  return el("p", { class: (s.state === "error" ? "error" : "muted") + " stats-state" }, s.message);
}

function cluster(c) {
  return el("section", { class: "cluster", "data-context": c.context },
    el("h2", {}, c.context, " ", el("span", { class: "muted", title: c.updated_at || "" }, c.updated_at ? "read " + new Date(c.updated_at).toLocaleTimeString() : "reading…")),
    el("h3", {}, "TrafficSplits"), splits(c.context, c.splits),
    el("h3", {}, "Gateways"), gateways(c.context, c.gateways),
    el("h3", {}, "Services"), stats(c.context, c.stats));
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const res = await fetch("/api/state", { cache: "no-store" });
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    const state = await res.json();
    refreshMs = state.refresh_ms || refreshMs;
    document.getElementById("clusters").replaceChildren(...state.clusters.map(cluster));
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "muted";
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  } catch (e) {
    status.textContent = "cannot reach tandem: " + e.message;
    status.className = "error";
  }
  setTimeout(poll, refreshMs);
}

poll();
