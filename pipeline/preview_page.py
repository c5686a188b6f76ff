"""The preview's page: the live pictures, then each stream's state and the last events, refreshed every few
seconds from ``/streams.json`` and ``/events.json``; an event with a clip plays it in a ``<video>`` element."""

from __future__ import annotations

STYLE = """
body{background:#111;color:#ddd;font-family:sans-serif;margin:0}
figure{display:inline-block;margin:8px}img{max-width:960px;display:block}
#state{display:flex;flex-wrap:wrap;gap:32px;margin:8px}h2{font-size:1.1em}
table{border-collapse:collapse}td,th{padding:2px 12px 2px 0;text-align:left}
#events{padding:0}#events li{list-style:none;display:flex;gap:8px;align-items:center;margin:4px 0}
#events li.clip{cursor:pointer}#events img{width:120px}video{max-width:640px;background:#000}
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
let shown = null;
let listed = "";

async function getJson(url) {
  const reply = await fetch(url, {cache: "no-store"});
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

function cells(row, ...texts) {
  for (const text of texts) row.insertCell().textContent = text;
}

async function showStreams() {
  const rows = $("streams").tBodies[0];
  try {
    const {streams} = await getJson("/streams.json");
    rows.replaceChildren();
    for (const s of streams) {
      const row = rows.insertRow();
      row.dataset.stream = s.id;
      row.dataset.state = s.state;
      cells(row, s.id, s.state, s.published, `${s.latency_ms.toFixed(0)} ms`);
    }
  } catch (err) {
    rows.replaceChildren();
    cells(rows.insertRow(), err.message);
  }
}

function describe(ev) {
  const where = ev.line || ev.zone;
  return `${ev.stream_id}: ${ev.kind} ${ev.label}` + (where ? ` (${where})` : "");
}

function play(ev) {
  shown = ev;
  $("player").hidden = false;
  $("player").src = ev.clip_url;
  $("clip").textContent = `${describe(ev)}: loading the clip`;
}

async function showEvents() {
  const list = $("events");
  try {
    const {events} = await getJson("/events.json?limit=20");
    $("events-note").textContent = events.length ? "" : "no events yet";
    const key = events.map((ev) => [ev.event_id, ev.snapshot, ev.clip].join()).join(";");
    if (key === listed) return;
    listed = key;
    list.replaceChildren();
    for (const ev of events) {
      const item = document.createElement("li");
      item.dataset.event = ev.event_id;
      if (ev.snapshot_url) {
        const img = document.createElement("img");
        img.src = ev.snapshot_url;
        img.alt = ev.label;
        item.append(img);
      }
      const text = document.createElement("span");
      const when = new Date(ev.started_at * 1000).toLocaleTimeString();
      text.textContent = `${when} ${describe(ev)}` + (ev.clip_url ? " \\u25b6 clip" : "");
      item.append(text);
      if (ev.clip_url) {
        item.className = "clip";
        item.addEventListener("click", () => play(ev));
      }
      list.append(item);
    }
    const newest = events.find((ev) => ev.clip_url);
    if (shown === null && newest) play(newest);
  } catch (err) {
    $("events-note").textContent = err.message;
    list.replaceChildren();
    listed = "";
  }
}

$("player").addEventListener("loadedmetadata", () => {
  const video = $("player");
  $("clip").dataset.duration = video.duration;
  $("clip").textContent = `${describe(shown)}: ${video.duration.toFixed(1)} s`;
});
$("player").addEventListener("error", () => {
  $("clip").dataset.error = String(($("player").error || {}).code);
  $("clip").textContent = `${describe(shown)}: this browser cannot play the clip (download it from its link)`;
});

function refresh() {
  showStreams();
  showEvents();
}
refresh();
setInterval(refresh, 3000);
"""

BODY = """
<div id="state">
<section><h2>Streams</h2><table id="streams"><thead><tr><th>stream</th><th>state</th><th>frames</th>
<th>latency</th></tr></thead><tbody></tbody></table></section>
<section><h2>Events</h2><p id="events-note"></p>
<video id="player" controls preload="metadata" playsinline hidden></video><p id="clip"></p>
<ul id="events"></ul></section>
</div>
"""


def page(tiles: str) -> str:
    """The whole page around ``tiles`` (the live pictures' figures, already escaped)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgesight preview</title>"
        f"<style>{STYLE}</style></head><body>{tiles}{BODY}<script>{SCRIPT}</script></body></html>"
    )
