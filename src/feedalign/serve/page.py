"""The annotation page: one HTML document with its script, no external assets.

Keyboard: the highlighted objective row takes the keys; after a choice the next row is
highlighted. Two completions: ``1``/``ArrowLeft`` left is better, ``2``/``ArrowRight`` right
is better, ``t`` tie, ``x`` both bad. One completion: ``u``/``ArrowUp`` thumbs up,
``d``/``ArrowDown`` thumbs down. ``j``/``k`` move between rows,
``c`` writes a comment, ``Enter`` submits (``Ctrl+Enter`` from the comment box). Every
button can be clicked instead.

A submission keeps its id until the server acknowledges it, so a retry after a network error
or a second click sends the same id and is stored once.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:1.5em auto;padding:0 1em;color:#222}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.8em;border-radius:6px;margin:.3em 0}
.cols{display:flex;gap:1em}.cols>div{flex:1}
.row{padding:.4em;border:2px solid transparent;border-radius:6px;margin:.3em 0}
.row.active{border-color:#3a7}.row button.chosen{background:#3a7;color:#fff}
button{margin:0 .2em;padding:.3em .7em}#status{min-height:1.4em;color:#555}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em;font-size:.85em}
</style></head><body>
<h1>__TITLE__</h1>
<div id="login"><label>Annotator id <input id="annotator" autocomplete="off"></label>
<button id="start">Start</button></div>
<p id="header" hidden>Annotator <b id="who"></b> &middot; <span id="progress"></span></p>
<div id="main" hidden>
<h3>Prompt</h3><pre id="prompt"></pre>
<div class="cols"><div><h3 id="left-title">Left</h3><pre id="left"></pre></div>
<div id="right-col"><h3>Right</h3><pre id="right"></pre></div></div>
<div id="rows"></div>
<p><label>Comment (optional, <kbd>c</kbd>)<br><textarea id="comment" rows="2" cols="80"></textarea></label></p>
<button id="submit">Submit (<kbd>Enter</kbd>)</button>
<p class="help">Keys: <kbd>1</kbd>/<kbd>&larr;</kbd> left better, <kbd>2</kbd>/<kbd>&rarr;</kbd> right
better, <kbd>t</kbd> tie, <kbd>x</kbd> both bad; <kbd>u</kbd>/<kbd>&uarr;</kbd> thumbs up,
<kbd>d</kbd>/<kbd>&darr;</kbd> thumbs down; <kbd>j</kbd>/<kbd>k</kbd> next/previous objective.</p>
</div>
<p id="done" hidden>All items rated. Thank you.</p>
<p id="status" role="status"></p>
<script>
const OBJECTIVES = __OBJECTIVES__;
const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");
let annotator = params.get("annotator") || "";
let state = null;  // {item, submission_id, values, active, sending}
const $ = (id) => document.getElementById(id);
const PAIR = [["left", "Left better", "1"], ["right", "Right better", "2"], ["tie", "Tie", "t"],
              ["both_bad", "Both bad", "x"]];
const SINGLE = [["up", "Thumbs up", "u"], ["down", "Thumbs down", "d"]];
const KEYS = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "t": "tie",
              "x": "both_bad", "u": "up", "ArrowUp": "up", "d": "down", "ArrowDown": "down"};

function headers() {
  const h = {"Content-Type": "application/json"};
  if (TOKEN) h["Authorization"] = "Bearer " + TOKEN;
  return h;
}
function say(text) { $("status").textContent = text; }

async function loadNext() {
  const r = await fetch("/api/next?annotator=" + encodeURIComponent(annotator), {headers: headers()});
  const body = await r.json();
  if (!r.ok) { say("Error: " + body.error); return; }
  $("progress").textContent = body.progress.done + " / " + body.progress.total + " rated";
  if (!body.item) { $("main").hidden = true; $("done").hidden = false; state = null; return; }
  state = {item: body.item, submission_id: body.submission_id, values: {}, active: 0, sending: false};
  render();
}

function render() {
  const item = state.item, pair = item.kind === "pair";
  $("prompt").textContent = item.prompt;
  $("left").textContent = item.left_text;
  $("left-title").textContent = pair ? "Left" : "Completion";
  $("right-col").hidden = !pair;
  $("right").textContent = pair ? item.right_text : "";
  $("comment").value = "";
  const rows = $("rows");
  rows.innerHTML = "";
  OBJECTIVES.forEach((objective, index) => {
    const row = document.createElement("div");
    row.className = "row"; row.id = "row-" + objective;
    const label = document.createElement("b");
    label.textContent = objective + ": ";
    row.appendChild(label);
    for (const [value, text, key] of (pair ? PAIR : SINGLE)) {
      const b = document.createElement("button");
      b.textContent = text + " (" + key + ")";
      b.dataset.objective = objective; b.dataset.value = value;
      b.addEventListener("click", () => { state.active = index; choose(value); });
      row.appendChild(b);
    }
    rows.appendChild(row);
  });
  highlight();
}

function highlight() {
  OBJECTIVES.forEach((objective, index) => {
    const row = $("row-" + objective);
    row.classList.toggle("active", index === state.active);
    for (const b of row.querySelectorAll("button"))
      b.classList.toggle("chosen", state.values[objective] === b.dataset.value);
  });
}

function choose(value) {
  const pair = state.item.kind === "pair";
  const allowed = (pair ? PAIR : SINGLE).map((v) => v[0]);
  if (!allowed.includes(value)) return;
  state.values[OBJECTIVES[state.active]] = value;
  state.active = Math.min(state.active + 1, OBJECTIVES.length - 1);
  highlight();
}

async function submit() {
  if (!state || state.sending) return;
  if (Object.keys(state.values).length === 0) { say("Rate at least one objective first."); return; }
  state.sending = true; $("submit").disabled = true;
  const body = {submission_id: state.submission_id, item_id: state.item.id, annotator: annotator,
                values: state.values, comment: $("comment").value};
  if (state.item.kind === "pair") body.left = state.item.left;
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const r = await fetch("/api/ratings", {method: "POST", headers: headers(), body: JSON.stringify(body)});
      const answer = await r.json();
      if (r.ok) { say("Saved (" + answer.status + ")."); break; }
      say("Not saved: " + answer.error);
      state.sending = false; $("submit").disabled = false; return;
    } catch (e) {
      say("Network error, retrying (" + attempt + ")...");
      await new Promise((res) => setTimeout(res, 500 * attempt));
      if (attempt === 5) { say("Not saved: the server does not answer."); state.sending = false;
                           $("submit").disabled = false; return; }
    }
  }
  $("submit").disabled = false;
  await loadNext();
}

document.addEventListener("keydown", (event) => {
  if (!state) return;
  if (event.target === $("comment")) {
    if (event.key === "Enter" && event.ctrlKey) { event.preventDefault(); submit(); }
    if (event.key === "Escape") $("comment").blur();
    return;
  }
  if (event.target === $("annotator")) return;
  if (event.key === "Enter") { event.preventDefault(); submit(); return; }
  if (event.key === "c") { event.preventDefault(); $("comment").focus(); return; }
  if (event.key === "j") { state.active = Math.min(state.active + 1, OBJECTIVES.length - 1); highlight(); return; }
  if (event.key === "k") { state.active = Math.max(state.active - 1, 0); highlight(); return; }
  if (KEYS[event.key]) { event.preventDefault(); choose(KEYS[event.key]); }
});

function start() {
  const value = $("annotator").value.trim() || annotator;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$/.test(value)) { say("Enter an annotator id (letters, digits, _ . @ : -)."); return; }
  annotator = value; $("who").textContent = annotator;
  $("login").hidden = true; $("main").hidden = false; $("header").hidden = false;
  document.activeElement.blur();
  loadNext();
}
$("start").addEventListener("click", start);
$("annotator").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
$("submit").addEventListener("click", submit);
if (annotator) { $("annotator").value = annotator; start(); }
</script></body></html>
"""


def render_page(title: str, objectives: Sequence[str]) -> str:
    # Objective names are checked identifiers; json.dumps + "</" escaping keeps them inert.
    return (_PAGE.replace("__TITLE__", html.escape(title))
            .replace("__OBJECTIVES__", json.dumps(list(objectives)).replace("</", "<\\/")))
