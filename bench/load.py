"""Load test of the HTTP service: N concurrent clients posting RealSet80 images.

Against a running server::

    python bench/load.py --url http://127.0.0.1:8000 --concurrency 1,4,16 --requests 32

or let it start ``resshift serve`` once per max-batch value (same machine, same run),
with the models from RESSHIFT_MODELS in the environment::

    RESSHIFT_MODELS=sr=models/realsr_v3 python bench/load.py --serve-max-batch 1,8 \\
        --concurrency 1,4,16 --crop 64 --json bench/results/load.json --plot docs/load.svg

Per concurrency level it reports latency p50/p95/p99, images/s, the mean UNet batch
size (from ``resshift_batch_size`` on /metrics, before and after the level) and the
mean queue and inference times the server reported (X-Queue-Seconds,
X-Inference-Seconds). ``--crop N`` centre-crops every image to at most NxN so that a
CPU run stays short; 0 sends the images as they are.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "realset80"


@dataclass
class Level:
    """Results of one concurrency level against one server configuration."""

    label: str
    concurrency: int
    requests: int
    ok: int
    errors: dict
    wall_s: float
    images_per_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    mean_batch: float
    mean_queue_s: float
    mean_inference_s: float


def load_images(folder: Path, crop: int, limit: int) -> list[tuple[str, bytes]]:
    """(name, PNG bytes) of the folder's images, centre-cropped to crop x crop if > 0."""
    out = []
    for path in sorted(folder.iterdir())[:limit or None]:
        try:
            im = Image.open(path)
            im.load()
        except OSError:
            continue
        if crop:
            w, h = im.size
            left, top = max(0, (w - crop) // 2), max(0, (h - crop) // 2)
            im = im.crop((left, top, left + min(w, crop), top + min(h, crop)))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append((path.name, buf.getvalue()))
    if not out:
        raise SystemExit(f"no readable images in {folder}")
    return out


def synthetic_png(side: int, seed: int = 0) -> bytes:
    """A side x side PNG of smooth random colour (noise upsampled 8x): photo-like work
    for the network, small files."""
    import numpy as np
    rng = np.random.default_rng(seed)
    small = (rng.random((max(2, side // 8), max(2, side // 8), 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def scrape_batches(client: httpx.Client) -> tuple[float, float]:
    """(sum, count) of resshift_batch_size over all tasks."""
    from prometheus_client.parser import text_string_to_metric_families
    total = count = 0.0
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "resshift_batch_size_sum":
                total += sample.value
            elif sample.name == "resshift_batch_size_count":
                count += sample.value
    return total, count


def run_level(url: str, images: list[tuple[str, bytes]], concurrency: int, requests: int,
              task: Optional[str], headers: dict, label: str, timeout_s: float) -> Level:
    """``requests`` posts spread over ``concurrency`` threads, each with its own client."""
    latencies: list[float] = []
    queue: list[float] = []
    inference: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client_loop() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
            for i in counter:                  # threads share the iterator: N in flight
                name, data = images[i % len(images)]
                fields = {"seed": str(i)} | ({"task": task} if task else {})
                start = time.perf_counter()
                try:
                    r = client.post("/v1/restore", files={"image": (name, data)}, data=fields)
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    if status == "200":
                        latencies.append(elapsed)
                        queue.append(float(r.headers.get("x-queue-seconds", 0)))
                        inference.append(float(r.headers.get("x-inference-seconds", 0)))
                    else:
                        errors[status] = errors.get(status, 0) + 1

    with httpx.Client(base_url=url, headers=headers, timeout=30) as probe:
        sum0, count0 = scrape_batches(probe)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(client_loop) for _ in range(concurrency)]:
                f.result()
        wall = time.perf_counter() - start
        sum1, count1 = scrape_batches(probe)
    ok = len(latencies)

    def stat(fn, values):
        return round(fn(values), 4) if values else float("nan")
    return Level(label=label, concurrency=concurrency, requests=requests, ok=ok, errors=errors,
                 wall_s=round(wall, 3), images_per_s=round(ok / wall, 4),
                 p50_s=stat(lambda v: percentile(v, 50), latencies),
                 p95_s=stat(lambda v: percentile(v, 95), latencies),
                 p99_s=stat(lambda v: percentile(v, 99), latencies),
                 mean_batch=round((sum1 - sum0) / (count1 - count0), 3) if count1 > count0
                 else float("nan"),
                 mean_queue_s=stat(statistics.mean, queue),
                 mean_inference_s=stat(statistics.mean, inference))


def table(levels: list[Level]) -> str:
    head = (f"{'config':<14}{'conc':>5}{'ok/req':>9}{'img/s':>8}{'p50 s':>8}{'p95 s':>8}"
            f"{'p99 s':>8}{'batch':>7}{'queue s':>9}{'infer s':>9}")
    rows = [head, "-" * len(head)]
    for lv in levels:
        rows.append(f"{lv.label:<14}{lv.concurrency:>5}{f'{lv.ok}/{lv.requests}':>9}"
                    f"{lv.images_per_s:>8.3f}{lv.p50_s:>8.2f}{lv.p95_s:>8.2f}{lv.p99_s:>8.2f}"
                    f"{lv.mean_batch:>7.2f}{lv.mean_queue_s:>9.2f}{lv.mean_inference_s:>9.2f}")
    return "\n".join(rows)


def svg_plot(levels: list[Level], path: Path) -> None:
    """Latency p50 (solid) and p95 (dashed) against concurrency, one colour per config."""
    from export.charts import Line, write_line_chart
    labels = list(dict.fromkeys(lv.label for lv in levels))
    lines = []
    for i, label in enumerate(labels):
        mine = [lv for lv in levels if lv.label == label and lv.ok]
        for field, dashed in (("p50_s", False), ("p95_s", True)):
            lines.append(Line(i, label, [(lv.concurrency, getattr(lv, field)) for lv in mine],
                              dashed=dashed))
    top = max(max(lv.p95_s for lv in levels if lv.ok), 1e-3) * 1.1
    write_line_chart(path, lines, sorted({lv.concurrency for lv in levels}),
                     "concurrent clients", "latency (s): p50 solid, p95 dashed", top)


class Server:
    """``resshift serve`` in a child process with extra RESSHIFT_* variables."""

    def __init__(self, env: dict[str, str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "resshift", "serve", "--port", str(self.port)],
            env={**os.environ, **env}, cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Server":
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"resshift serve exited:\n{self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("resshift serve did not become ready in 10 minutes")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="a running server")
    p.add_argument("--serve-max-batch", help="instead of --url: start `resshift serve` once "
                   "per value, e.g. 1,8 (RESSHIFT_MODELS etc. from the environment)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="image folder")
    p.add_argument("--limit", type=int, default=0, help="use the first N images (0 = all)")
    p.add_argument("--crop", type=int, default=0, help="centre crop to NxN (0 = whole image)")
    p.add_argument("--concurrency", default="16", help="comma list of client counts")
    p.add_argument("--requests", type=int, default=0,
                   help="requests per level (default: 2 x concurrency)")
    p.add_argument("--task", help="task field (default: the server's only task)")
    p.add_argument("--api-key", default=os.environ.get("RESSHIFT_BENCH_KEY"))
    p.add_argument("--timeout", type=float, default=900.0, help="client timeout per request")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, help="write a latency-vs-concurrency SVG here")
    args = p.parse_args(argv)

    images = load_images(args.images, args.crop, args.limit)
    levels_c = [int(c) for c in args.concurrency.split(",")]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    def sweep(url: str, label: str) -> list[Level]:
        out = []
        for c in levels_c:
            lv = run_level(url, images, c, args.requests or 2 * c, args.task, headers, label,
                           args.timeout)
            print(table([lv]).splitlines()[-1], flush=True)
            out.append(lv)
        return out

    print(table([]), flush=True)
    levels: list[Level] = []
    if args.serve_max_batch:
        for mb in args.serve_max_batch.split(","):
            with Server({"RESSHIFT_MAX_BATCH": mb.strip()}) as server:
                levels += sweep(server.url, f"max_batch={mb.strip()}")
    else:
        levels += sweep(args.url, "server")
    print()
    print(table(levels))
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None
                                                        else sys.argv[1:])),
        "env": {k: v for k, v in os.environ.items()
                if k.startswith("RESSHIFT_") and "KEY" not in k},
        "images": {"folder": str(args.images), "count": len(images), "crop": args.crop},
        "levels": [asdict(lv) for lv in levels],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        svg_plot(levels, args.plot)
    failed = sum(lv.requests - lv.ok for lv in levels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
