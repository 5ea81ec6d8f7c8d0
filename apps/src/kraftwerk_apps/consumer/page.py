"""The HTML page served at ``/``: self-contained (inline CSS/JS, no CDN), live via SSE."""

from __future__ import annotations

import html
import json
from typing import Any

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kraftwerk consumer - __TOPIC__</title>
<style>
  :root { color-scheme: light dark; --accent: #2a7ae2; --muted: #888; }
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .meta { color: var(--muted); font-size: .9rem; margin-bottom: 1rem; }
  #status { font-weight: bold; }
  #status.live { color: #2e9d4a; } #status.down { color: #d33; }
  table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; font-size: .9rem; }
  th, td { border-bottom: 1px solid #8884; padding: .35rem .5rem; text-align: left;
           vertical-align: top; }
  th { background: #8881; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: .85rem; }
  .bad { color: #d33; }
  .here { color: var(--accent); font-weight: bold; }
  .ttype { color: var(--muted); font-size: .8rem; }
  .badge { display: inline-block; padding: .1rem .6rem; border-radius: 1rem; color: #fff;
           background: #888; font-size: .85rem; font-weight: bold; vertical-align: middle; }
  .badge[data-state="ok"] { background: #2e9d4a; }
  .badge[data-state="warning"] { background: #c77c00; }
  .badge[data-state="critical"] { background: #d33; }
  #health-alerts { margin: 0 0 1.5rem; padding-left: 1.2rem; font-size: .9rem; }
  #health-alerts li.none { list-style: none; margin-left: -1.2rem; color: var(--muted); }
</style>
</head>
<body>
<h1>Latest __SIZE__ messages of <code>__TOPIC__</code></h1>
<div class="meta">group <code>__GROUP__</code> &middot; served by <code id="instance"></code>
  &middot; <span id="status">connecting&hellip;</span>
  &middot; total lag <span id="lag">?</span></div>
<table>
  <thead><tr><th>time</th><th>partition</th><th>offset</th><th>key</th><th>headers</th>
  <th>value</th></tr></thead>
  <tbody id="messages"></tbody>
</table>
<h2>Partitions (committed offsets of the group, end offsets, lag)</h2>
<div class="meta" id="offsets-error"></div>
<table>
  <thead><tr><th>partition</th><th>committed</th><th>end offset</th><th>lag</th>
  <th>assigned to this instance</th></tr></thead>
  <tbody id="partitions"></tbody>
</table>
<section id="cluster-health" data-state="loading">
<h2>Cluster health <span id="health-state" class="badge" data-state="loading">loading</span></h2>
<div class="meta" id="health-message"></div>
<table>
  <thead><tr><th>Kafka nodes up</th><th>under-replicated partitions</th>
  <th>under min ISR partitions</th><th>messages in / s</th><th>consumer lag</th></tr></thead>
  <tbody><tr>
    <td class="num"><span id="health-brokers-up">?</span> of
      <span id="health-brokers-total">?</span></td>
    <td class="num" id="health-urp">?</td>
    <td class="num" id="health-under-min-isr">?</td>
    <td class="num" id="health-messages-in">?</td>
    <td class="num" id="health-consumer-lag">?</td>
  </tr></tbody>
</table>
<ul id="health-alerts" data-count="0" data-firing="0"></ul>
<div class="meta">from <span id="health-source">-</span> at <span id="health-updated">-</span></div>
</section>
<script>
"use strict";
const BASE = __BASE__;
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function shown(text, encoding) {
  if (text === null || text === undefined) return "null";
  return encoding === "base64" ? "base64:" + text : text;
}
function render(snap) {
  document.getElementById("instance").textContent = snap.instance;
  document.getElementById("lag").textContent = snap.total_lag;
  const body = document.getElementById("messages");
  body.replaceChildren();
  for (const m of snap.messages) {
    const tr = document.createElement("tr");
    const time = cell(tr, Number.isFinite(m.timestamp) && m.timestamp >= 0
      ? new Date(m.timestamp).toISOString() : m.timestamp);
    if (m.timestamp_type && m.timestamp_type !== "LogAppendTime") {
      const tt = document.createElement("div");
      tt.className = "ttype";
      tt.textContent = m.timestamp_type;
      time.appendChild(tt);
    }
    cell(tr, m.partition, "num");
    cell(tr, m.offset, "num");
    cell(tr, m.key === null ? null : shown(m.key, m.key_encoding));
    const hd = document.createElement("td");
    const hpre = document.createElement("pre");
    hpre.textContent = (m.headers || [])
      .map((h) => h.name + ": " + shown(h.value, h.encoding)).join("\\n");
    hd.appendChild(hpre); tr.appendChild(hd);
    const td = document.createElement("td");
    const pre = document.createElement("pre");
    if (m.valid_json) {
      pre.textContent = JSON.stringify(m.value);
    } else {
      let text = "not JSON: " + m.reason;
      if (m.raw !== null && m.raw !== undefined) {
        text += "\\n" + shown(m.raw, m.raw_encoding) + (m.raw_truncated ? " [...]" : "");
      }
      pre.textContent = text;
      pre.className = "bad";
    }
    td.appendChild(pre); tr.appendChild(td);
    body.appendChild(tr);
  }
  const parts = document.getElementById("partitions");
  parts.replaceChildren();
  for (const p of snap.partitions) {
    const tr = document.createElement("tr");
    cell(tr, p.partition, "num");
    cell(tr, p.committed, "num");
    cell(tr, p.end_offset, "num");
    cell(tr, p.lag, "num");
    cell(tr, p.assigned_here ? "yes" : "no", p.assigned_here ? "here" : "");
    parts.appendChild(tr);
  }
  document.getElementById("offsets-error").textContent = snap.offsets_error || "";
}
render(__INITIAL__);
const status = document.getElementById("status");
const source = new EventSource(BASE + "/events");
source.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
source.onopen = () => { status.textContent = "live"; status.className = "live"; };
source.onerror = () => { status.textContent = "reconnecting"; status.className = "down"; };
// Cluster health: polled (the server caches Prometheus's answer for every browser).
const HEALTH_POLL_MS = 10000;
const HEALTH_TEXT = {
  ok: "healthy", warning: "warning", critical: "critical", unavailable: "health unavailable",
  not_configured: "monitoring not configured", loading: "loading",
};
function known(v) { return v !== null && v !== undefined; }
function healthValue(id, value, bad, text) {
  const el = document.getElementById(id);
  el.textContent = known(value) ? (text === undefined ? String(value) : text) : "-";
  el.dataset.value = known(value) ? String(value) : "";
  el.classList.toggle("bad", Boolean(bad));
}
function renderHealth(h) {
  const state = h.state || "unavailable";
  document.getElementById("cluster-health").dataset.state = state;
  const badge = document.getElementById("health-state");
  badge.dataset.state = state;
  badge.textContent = HEALTH_TEXT[state] || state;
  let message = "";
  if (state === "not_configured") message = "monitoring not configured";
  else if (h.error) message = "health unavailable: " + h.error;
  document.getElementById("health-message").textContent = message;
  const up = h.brokers_up, total = h.brokers_total;
  const down = known(total) && (total === 0 || (known(up) && up < total));
  healthValue("health-brokers-up", up, down);
  healthValue("health-brokers-total", total, down);
  healthValue("health-urp", h.under_replicated, h.under_replicated > 0);
  healthValue("health-under-min-isr", h.under_min_isr, h.under_min_isr > 0);
  healthValue("health-messages-in", h.messages_in_per_sec, false,
    known(h.messages_in_per_sec) ? Number(h.messages_in_per_sec).toFixed(1) : undefined);
  healthValue("health-consumer-lag", h.consumer_lag, false);
  const list = document.getElementById("health-alerts");
  const alerts = h.alerts || [];
  list.replaceChildren();
  list.dataset.count = String(alerts.length);
  list.dataset.firing = String(alerts.filter((a) => a.state === "firing").length);
  for (const a of alerts) {
    const li = document.createElement("li");
    li.dataset.alert = a.name;
    li.dataset.severity = a.severity;
    li.dataset.instance = a.instance;
    li.dataset.state = a.state;
    li.textContent = a.name + " (" + (a.severity || "no severity") + ")"
      + (a.instance ? " on " + a.instance : "") + ": " + a.state;
    if (a.state === "firing" && a.severity === "critical") li.className = "bad";
    list.appendChild(li);
  }
  if (!alerts.length && ["ok", "warning", "critical"].includes(state)) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "no alerts";
    list.appendChild(li);
  }
  document.getElementById("health-source").textContent = h.source || "-";
  document.getElementById("health-updated").textContent = known(h.fetched_at)
    ? new Date(h.fetched_at * 1000).toISOString() : "-";
}
async function pollHealth() {
  if (!document.hidden) {
    try {
      const r = await fetch(BASE + "/cluster-health", {
        cache: "no-store", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const h = await r.json();
      renderHealth(h);
      if (h.state === "not_configured") return;  // a restart is needed to change that
    } catch (err) {
      renderHealth({ state: "unavailable", error: "no answer from the consumer (" + err.message
        + ")", alerts: [] });
    }
  }
  setTimeout(pollHealth, HEALTH_POLL_MS);
}
pollHealth();
</script>
</body>
</html>
"""


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return (
        json.dumps(value, default=str)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def render_page(snapshot: dict[str, Any], base_path: str) -> str:
    return (
        _TEMPLATE.replace("__TOPIC__", html.escape(str(snapshot["topic"])))
        .replace("__GROUP__", html.escape(str(snapshot["group"])))
        .replace("__SIZE__", str(int(snapshot["history_size"])))
        .replace("__BASE__", _script_json(base_path.rstrip("/")))
        .replace("__INITIAL__", _script_json(snapshot))
    )
