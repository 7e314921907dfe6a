// Grainery dashboard: polls /api/overview and redraws; no framework, no build step.
// The cookie set by /?token=... (HttpOnly) authenticates these requests when the silo has a token.
"use strict";

const POLL_MS = 1500;
const COLORS = ["#5b8def", "#e8833a", "#3aa76d", "#b05bd6", "#d64545", "#2bb3c0", "#8c8c3a"];
const charts = {};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function age(seconds) {
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

function num(value, digits = 0) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function lastOf(values) {
  for (let i = (values || []).length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

function renderSummary(view) {
  const s = view.series;
  document.getElementById("sum-calls").textContent = num(lastOf(s.calls_per_second), 1);
  document.getElementById("sum-errors").textContent = num(lastOf(s.errors_per_second), 1);
  document.getElementById("sum-p99").textContent = num(lastOf(s.p99_ms), 1);
  document.getElementById("sum-activations").textContent =
    num(Object.values(view.activations.by_type).reduce((a, b) => a + b, 0));
  document.getElementById("sum-members").textContent =
    `${view.members.filter((m) => m.state === "active").length}/${view.members.length}`;
}

function renderMembers(members, bySilo) {
  const rows = members.map((m) => el("tr", { "data-silo": m.silo_id, "data-state": m.state },
    el("td", {}, m.silo_id),
    el("td", {}, m.address),
    el("td", { class: "state", "data-state": m.state }, m.state),
    el("td", { class: "num" }, age(m.age_seconds)),
    el("td", {}, el("span", { class: "bar", style: `width:${Math.round(m.ring_share * 120)}px` }),
      ` ${(m.ring_share * 100).toFixed(1)}%`),
    el("td", { class: "num" }, num(m.activations)),
    el("td", { class: "num" }, m.error || m.activations === null ? "–" : num(lastOf(bySilo[m.silo_id]), 1)),
    el("td", { class: "num" }, num(m.calls_in_flight)),
    el("td", { class: "num" }, num(m.tasks)),
    el("td", { class: "num" }, num(m.reminder_partitions)),
    el("td", { class: "num" }, num(m.stream_partitions)),
    el("td", { class: "error" }, m.error || "")));
  fill(document.querySelector("#members tbody"), rows);
}

function renderActivations(activations, members) {
  const silos = members.filter((m) => activations.by_silo[m.silo_id]).map((m) => m.silo_id);
  const unique = [...new Set(silos)];
  const head = el("tr", {}, el("th", {}, "grain type"), el("th", { class: "num" }, "total"),
    ...unique.map((s) => el("th", { class: "num" }, s)));
  document.querySelector("#activations thead").replaceChildren(head);
  const rows = Object.entries(activations.by_type).map(([type, total]) => el("tr", { "data-type": type },
    el("td", {}, type), el("td", { class: "num" }, num(total)),
    ...unique.map((s) => el("td", { class: "num" }, num(activations.by_silo[s][type] || 0)))));
  fill(document.querySelector("#activations tbody"), rows);
  const types = document.getElementById("grain-types");
  types.replaceChildren(...Object.keys(activations.by_type).map((t) => el("option", { value: t })));
}

function renderTop(id, rows, columns) {
  fill(document.querySelector(`#${id} tbody`), rows.map((r) => el("tr", {},
    el("td", {}, `${r.grain_type}/${r.grain_key}`), el("td", {}, r.silo),
    ...columns.map(([field, digits]) => el("td", { class: "num" }, num(r[field], digits))))));
}

// One uPlot per chart; rebuilt when its set of lines changes (a silo joined or left).
function drawChart(id, series, times) {
  const box = document.getElementById(id);
  const names = Object.keys(series);
  const key = names.join("|");
  const data = [times, ...names.map((n) => series[n])];
  let chart = charts[id];
  if (!chart || chart.key !== key) {
    if (chart) chart.plot.destroy();
    const opts = {
      width: Math.max(300, box.clientWidth || 400), height: 200,
      scales: { x: { time: true } },
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2,
        spanGaps: true }))],
      axes: [{}, { size: 60 }],
    };
    chart = charts[id] = { key, plot: new uPlot(opts, data, box) };
  } else {
    chart.plot.setData(data);
  }
  box.setAttribute("data-points", String(times.length));
  box.setAttribute("data-last", String(names.length ? series[names[0]][times.length - 1] : ""));
  box.setAttribute("data-series", names.join(","));
}

function renderCharts(series) {
  const times = series.time;
  const calls = { cluster: series.calls_per_second };
  for (const [silo, values] of Object.entries(series.by_silo)) calls[silo] = values;
  drawChart("chart-calls", calls, times);
  drawChart("chart-errors", { errors: series.errors_per_second }, times);
  drawChart("chart-latency", { p50: series.p50_ms, p95: series.p95_ms, p99: series.p99_ms }, times);
  drawChart("chart-reminders", { ticks: series.reminder_ticks_per_second,
    "not ok": series.reminder_failures_per_second }, times);
  drawChart("chart-reminder-lag", { p50: series.reminder_lag_p50_ms, p99: series.reminder_lag_p99_ms },
    times);
  drawChart("chart-streams", { published: series.stream_published_per_second,
    delivered: series.stream_delivered_per_second, redelivered: series.stream_redelivered_per_second,
    "dead-lettered": series.stream_dead_lettered_per_second }, times);
  drawChart("chart-stream-lag", { p50: series.stream_lag_p50_ms, p99: series.stream_lag_p99_ms }, times);
  // "durable_steps.ok" -> "steps ok", "durable_runs.started" -> "runs started"
  const durable = {};
  for (const [name, values] of Object.entries(series.events || {})) {
    if (name.startsWith("durable_")) durable[name.slice(8).replace(".", " ")] = values;
  }
  drawChart("chart-durable", durable, times);
}

function render(view) {
  document.getElementById("cluster").textContent = `cluster ${view.cluster}`;
  document.getElementById("served-by").textContent = view.served_by;
  document.getElementById("version").textContent = view.membership_version;
  document.getElementById("updated").textContent = new Date(view.time * 1000).toLocaleTimeString();
  renderSummary(view);
  renderMembers(view.members, view.series.by_silo);
  renderActivations(view.activations, view.members);
  renderTop("busiest", view.busiest, [["calls_per_second", 1], ["mean_ms", 2]]);
  renderTop("slowest", view.slowest, [["mean_ms", 2], ["slowest_ms", 2]]);
  renderCharts(view.series);
}

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.setAttribute("data-state", state);
  status.textContent = text;
}

async function poll() {
  try {
    const reply = await fetch("/api/overview", { credentials: "same-origin", cache: "no-store" });
    if (!reply.ok) throw new Error(`${reply.status} ${await reply.text()}`);
    render(await reply.json());
    setStatus("live", "live");
  } catch (error) {
    setStatus("error", `not updating: ${error.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function lookup(event) {
  event.preventDefault();
  const type = document.getElementById("lookup-type").value.trim();
  const key = document.getElementById("lookup-key").value;
  const out = document.getElementById("lookup-result");
  const query = new URLSearchParams({ type, key });
  const reply = await fetch(`/api/grain?${query}`, { credentials: "same-origin", cache: "no-store" });
  if (!reply.ok) {
    out.replaceChildren(el("dt", {}, "error"), el("dd", { class: "error" }, await reply.text()));
    fill(document.querySelector("#lookup-journal tbody"), []);
    return;
  }
  const grain = await reply.json();
  const fields = [
    ["grain", `${grain.grain_type}/${grain.grain_key}`],
    ["active", grain.active ? "yes" : "no"],
    ["lives on", grain.active ? `${grain.silo_id} (${grain.address})`
      : grain.stateless_worker ? "any silo (a stateless worker)" : "nowhere (not active)"],
    ["ring owner", grain.ring_owner || "–"],
    ["state size", `${grain.state_bytes} bytes`],
    ...activationFields(grain.activation),
    ["reminders", reminderText(grain.reminders)],
    ["journal", typeof grain.journal === "string" ? grain.journal
      : grain.journal.length ? `last ${grain.journal.length} entries, newest first:` : "empty"],
  ];
  out.replaceChildren(...fields.flatMap(([name, value]) => [el("dt", {}, name),
    el("dd", { "data-field": name }, value)]));
  const entries = typeof grain.journal === "string" ? [] : grain.journal;
  fill(document.querySelector("#lookup-journal tbody"), entries.map((e) => el("tr", {},
    el("td", { class: "num" }, String(e.seq)), el("td", {}, e.kind),
    el("td", {}, new Date(e.time_ms).toLocaleTimeString()), el("td", { class: "data" }, e.data))));
}

function reminderText(reminders) {
  if (typeof reminders === "string") return reminders;  // the store could not be read
  if (!reminders.length) return "none";
  return reminders.map((r) => {
    const when = r.disabled ? `disabled: ${r.disabled}`
      : r.delivering ? "a tick is being delivered" : `next in ${num(r.due_in_seconds, 1)}s`;
    const failures = r.failures ? `, ${r.failures} undeliverable` : "";
    return `${r.name} every ${num(r.period, 0)}s, ${when}${failures}`;
  }).join("; ");
}

// What the hosting silo says of the activation: is it busy, queueing, slow?
function activationFields(activation) {
  if (!activation) return [];
  if (activation.error) return [["activation", activation.error]];
  return [
    ["activation", `${activation.phase}, ${activation.turns} running, ${activation.queued} queued, ` +
      `idle ${activation.idle_seconds}s`],
    ["recent calls", `${activation.recent_calls} in ${activation.window_seconds}s` +
      (activation.recent_calls ? `, mean ${num(activation.mean_ms, 2)} ms, slowest ${num(activation.slowest_ms, 2)} ms` : "")],
  ];
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("lookup").addEventListener("submit", lookup);
  poll();
});
