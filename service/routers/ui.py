"""GET /: a one-page demo: drop an image, pick a task, see before and after side by side.

Plain HTML and a few lines of JavaScript against the public API (POST /v1/restore), so
it shows nothing the API does not.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ResShift restoration</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
 #drop { border: 2px dashed #888; padding: 2rem; text-align: center; border-radius: 8px; }
 #drop.over { background: #eef; }
 .pair { display: flex; gap: 1rem; margin-top: 1rem; flex-wrap: wrap; }
 figure { margin: 0; } img { max-width: 45vw; image-rendering: pixelated; border: 1px solid #ccc; }
 #status { margin-top: 1rem; min-height: 1.2em; } .error { color: #b00; }
</style></head>
<body>
<h1>ResShift restoration</h1>
<p>
 <label>Task <select id="task"></select></label>
 <label>Seed <input id="seed" type="number" min="0" placeholder="random" size="8"></label>
 <label>API key <input id="key" type="password" placeholder="if required" size="12"></label>
</p>
<div id="drop">Drop an image here, or <input id="file" type="file" accept="image/*"></div>
<p id="maskrow" hidden><label>Mask (white = fill) <input id="mask" type="file" accept="image/*"></label></p>
<div id="status"></div>
<div class="pair">
 <figure><figcaption>Before</figcaption><img id="before" alt="input"></figure>
 <figure><figcaption>After</figcaption><img id="after" alt="restored"></figure>
</div>
<script>
const $ = (id) => document.getElementById(id);
let models = {};
function headers() {
  const key = $("key").value.trim();
  return key ? {"Authorization": "Bearer " + key} : {};
}
async function loadModels() {
  const r = await fetch("/v1/models", {headers: headers()});
  if (!r.ok) { $("status").textContent = "models: " + r.status; return; }
  const data = await r.json();
  $("task").innerHTML = "";
  for (const m of data.models) {
    models[m.task] = m;
    $("task").add(new Option(m.task + " (" + m.model + ", x" + m.scale + ")", m.task));
  }
  $("maskrow").hidden = !(models[$("task").value] || {}).needs_mask;
}
async function restore(file) {
  $("before").src = URL.createObjectURL(file);
  $("after").removeAttribute("src");
  const form = new FormData();
  form.append("image", file);
  form.append("task", $("task").value);
  if ($("seed").value) form.append("seed", $("seed").value);
  const mask = $("mask").files[0];
  if (mask && !$("maskrow").hidden) form.append("mask", mask);
  $("status").className = ""; $("status").textContent = "restoring...";
  const r = await fetch("/v1/restore", {method: "POST", body: form, headers: headers()});
  if (!r.ok) {
    let msg = r.status + "";
    try { const e = await r.json(); msg += " " + e.error.code + ": " + e.error.message; } catch (_) {}
    $("status").className = "error"; $("status").textContent = msg; return;
  }
  $("after").src = URL.createObjectURL(await r.blob());
  $("status").textContent = "done: seed " + r.headers.get("X-Seed") + ", model " +
    r.headers.get("X-Model") + ", " + r.headers.get("X-Inference-Seconds") + " s inference";
}
$("task").onchange = () => { $("maskrow").hidden = !(models[$("task").value] || {}).needs_mask; };
$("key").onchange = loadModels;
$("file").onchange = (e) => e.target.files[0] && restore(e.target.files[0]);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) restore(e.dataTransfer.files[0]); };
loadModels();
</script>
</body></html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)
