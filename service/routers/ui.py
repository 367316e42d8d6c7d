"""GET /: a one-page demo: drop an image, pick a task, compare before and after.

Plain HTML and a few lines of JavaScript against the public API (POST /v1/restore), so
it shows nothing the API does not. Before and after share one box at the restored
image's displayed size (the input enlarged pixel for pixel), split by a slider.
GET /favicon.ico: the page's icon.
"""

from __future__ import annotations

import functools
import io

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from PIL import Image, ImageDraw

router = APIRouter(tags=["ui"])

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ResShift restoration</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.ico" sizes="16x16 32x32 48x48">
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
 #drop { border: 2px dashed #888; padding: 2rem; text-align: center; border-radius: 8px; }
 #drop.over { background: #eef; }
 #status { margin-top: 1rem; min-height: 1.2em; } .error { color: #b00; }
 /* An img without a source would draw the broken-image icon and its alt text: keep it
    out of the page (the id selectors below set display, so these must outrank them). */
 #compare[hidden], #stage img:not([src]) { display: none; }
 /* The box takes the restored image's displayed size (natural, or narrower to fit);
    the input lies over it at exactly that size, clipped to the left of the split. */
 #compare { display: inline-block; max-width: 100%; margin-top: 1rem; }
 #stage { position: relative; line-height: 0; border: 1px solid #ccc; }
 #after { display: block; max-width: 100%; height: auto; }
 #before { display: block; max-width: 100%; height: auto; image-rendering: pixelated; }
 #compare.done #before { position: absolute; inset: 0; width: 100%; height: 100%;
   clip-path: inset(0 calc(100% - var(--split)) 0 0); }
 #divider { position: absolute; top: 0; bottom: 0; left: var(--split); width: 2px;
   margin-left: -1px; background: #fff; box-shadow: 0 0 2px #000; pointer-events: none; }
 .tag { position: absolute; top: 4px; padding: 1px 5px; font-size: 12px; line-height: 1.4;
   background: rgba(0,0,0,.55); color: #fff; border-radius: 3px; pointer-events: none; }
 #tag-before { left: 4px; } #tag-after { right: 4px; }
 #compare:not(.done) #divider, #compare:not(.done) #tag-after, #compare:not(.done) #split
   { display: none; }
 /* The slider and the size line take the box's width and never widen it (contain:
    inline-size: no intrinsic width of their own), so the image alone sizes the box. */
 #split { display: block; width: 100%; margin: .5rem 0 0; box-sizing: border-box;
   contain: inline-size; }
 #sizes { font-size: 13px; color: #555; margin-top: .25rem; contain: inline-size; }
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
<div id="compare" hidden style="--split: 50%">
 <div id="stage">
  <img id="after" alt="restored">
  <img id="before" alt="input, enlarged to the restored size">
  <div id="divider"></div>
  <span class="tag" id="tag-before">before</span><span class="tag" id="tag-after">after</span>
 </div>
 <input id="split" type="range" min="0" max="100" step="0.5" value="50"
        aria-label="split between before (left) and after (right)">
 <div id="sizes"></div>
</div>
<script>
const $ = (id) => document.getElementById(id);
let models = {};
let run = 0;             // a newer upload wins over a slower earlier one
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
function loaded(img, url) {
  return new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; img.src = url; });
}
async function restore(file) {
  const mine = ++run;
  const scale = (models[$("task").value] || {}).scale || 1;
  $("compare").classList.remove("done");
  $("after").removeAttribute("src");
  $("sizes").textContent = "";
  $("compare").hidden = false;
  try { await loaded($("before"), URL.createObjectURL(file)); }
  catch (_) { $("before").removeAttribute("src"); }
  // Until the result arrives the input alone fills the box at the size it will have.
  if ($("before").naturalWidth) $("before").style.width = $("before").naturalWidth * scale + "px";
  const form = new FormData();
  form.append("image", file);
  form.append("task", $("task").value);
  if ($("seed").value) form.append("seed", $("seed").value);
  const mask = $("mask").files[0];
  if (mask && !$("maskrow").hidden) form.append("mask", mask);
  $("status").className = ""; $("status").textContent = "restoring...";
  const r = await fetch("/v1/restore", {method: "POST", body: form, headers: headers()});
  if (mine !== run) return;
  if (!r.ok) {
    let msg = r.status + "";
    try { const e = await r.json(); msg += " " + e.error.code + ": " + e.error.message; } catch (_) {}
    $("status").className = "error"; $("status").textContent = msg; return;
  }
  await loaded($("after"), URL.createObjectURL(await r.blob()));
  if (mine !== run) return;
  $("before").style.width = "";
  $("compare").classList.add("done");
  const b = $("before"), a = $("after");
  $("sizes").textContent = (b.naturalWidth ? "before " + b.naturalWidth + "x" +
    b.naturalHeight + " (enlarged), " : "before: this browser cannot show the input; ") +
    "after " + a.naturalWidth + "x" + a.naturalHeight;
  $("status").textContent = "done: seed " + r.headers.get("X-Seed") + ", model " +
    r.headers.get("X-Model") + ", " + r.headers.get("X-Inference-Seconds") + " s inference";
}
$("split").oninput = (e) => $("compare").style.setProperty("--split", e.target.value + "%");
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


@functools.cache
def favicon_ico() -> bytes:
    """The icon, drawn once: a split square, coarse pixels left of a white line and a
    smooth gradient right of it (the page's before/after comparison), as a 16/32/48 ICO."""
    size = 48
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    cell = 8
    for y in range(0, size, cell):                 # left: blocky "before"
        for x in range(0, size // 2, cell):
            shade = 70 + 25 * ((x + y) // cell % 4)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(40, shade, 200, 255))
    for x in range(size // 2, size):               # right: smooth "after"
        t = (x - size // 2) / (size // 2)
        draw.line([x, 0, x, size - 1], fill=(40, int(120 + 100 * t), int(220 - 40 * t), 255))
    draw.rectangle([size // 2 - 2, 0, size // 2 + 1, size - 1], fill=(255, 255, 255, 255))
    out = io.BytesIO()
    img.save(out, format="ICO", sizes=[(16, 16), (32, 32), (48, 48)])
    return out.getvalue()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(favicon_ico(), media_type="image/x-icon",
                    headers={"Cache-Control": "public, max-age=86400"})
