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
