"""Load and soak test of the HTTP service: a mix of small, large, bad and cancelled
requests for N minutes, on the loopback interface only.

    python bench/soak.py --minutes 20 --json bench/results/soak.json \
        --plot docs/soak_rss.png

starts ``resshift serve`` (the bundled model unless RESSHIFT_MODELS says otherwise) on a
free loopback port and sends, from ``--concurrency`` client threads, requests drawn by
weight from these classes:

- ``small``: a 64x64 crop of a RealSet80 photo, ``POST /v1/restore`` (expects 200);
- ``medium``: a 128x128 crop, ``POST /v1/restore`` (200);
- ``large``: a 600x600 crop through the jobs API, polled to the end (202 then
  succeeded; or an immediate 413 ``too_much_work`` when admission prices it over the
  jobs deadline);
- ``bad``: a truncated PNG, an unknown task, a seed in other digits, broken JSON, a
  header claiming 60000x60000 pixels (each must be its 4xx);
- ``canceled``: a 128x128 job deleted 0.3 s after it was accepted (200 on DELETE).

Bounded: it stops at ``--minutes`` or ``--max-requests``, whichever comes first, and
only talks to 127.0.0.1. It reports per class the count, the statuses, latency p50/p95
(for jobs: submission to succeeded), the throughput, the number of 5xx answers (must be
0: the exit status is 1 otherwise) and the server's resident memory over time
(``process_resident_memory_bytes`` from /metrics, every 5 s), drawn with matplotlib
(the ``train`` extra) when ``--plot`` is given.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.load import DEFAULT_IMAGES, Server, load_images, percentile  # noqa: E402

WEIGHTS = {"small": 10, "medium": 4, "large": 1, "bad": 3, "canceled": 2}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Soak:
    def __init__(self, url: str, images: dict[str, list[bytes]], seed: int):
        self.url = url
        self.images = images
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.rss: list[tuple[float, float]] = []          # (minutes, MB)
        self.errors_5xx: list[str] = []
        self.started = time.monotonic()

    def pick(self) -> str:
        with self.lock:
            return self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]

    def image(self, size: str) -> bytes:
        with self.lock:
            return self.rng.choice(self.images[size])

    def record(self, kind: str, status: int, seconds: Optional[float], detail: str = "") -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            if seconds is not None:
                self.latency[kind].append(seconds)
            if status >= 500:
                self.errors_5xx.append(f"{kind}: {status} {detail[:200]}")

    # -- one request of each class ------------------------------------------------------
    def run_one(self, client: httpx.Client, kind: str) -> None:
        start = time.monotonic()
        if kind in ("small", "medium"):
            r = client.post("/v1/restore", files={"image": ("x.png", self.image(kind))})
            self.record(kind, r.status_code, time.monotonic() - start if r.is_success else None,
                        r.text if r.status_code >= 500 else "")
        elif kind == "large":
            r = client.post("/v1/jobs", files={"image": ("x.png", self.image("large"))})
            if r.status_code != 202:
                self.record(kind, r.status_code, None, r.text)
                return
            job = r.json()["id"]
            while True:
                state = client.get(f"/v1/jobs/{job}").json()
                if state["status"] not in ("queued", "running"):
                    break
                time.sleep(0.5)
            status = 200 if state["status"] == "succeeded" else 500 \
                if state.get("error", {}).get("code", "").startswith(("internal", "inference")) \
                else 409
            if status == 200:
                status = client.get(f"/v1/jobs/{job}/result").status_code
            self.record(kind, status, time.monotonic() - start if status == 200 else None,
                        json.dumps(state))
        elif kind == "canceled":
            r = client.post("/v1/jobs", files={"image": ("x.png", self.image("medium"))})
            if r.status_code != 202:
                self.record(kind, r.status_code, None, r.text)
                return
            time.sleep(0.3)
            d = client.delete(f"/v1/jobs/{r.json()['id']}")
            self.record(kind, d.status_code, time.monotonic() - start, d.text)
        else:
            self.record(kind, *self.bad(client))

    def bad(self, client: httpx.Client) -> tuple[int, None, str]:
        with self.lock:
            case = self.rng.randrange(5)
        if case == 0:
            data = self.image("small")
            r = client.post("/v1/restore", files={"image": ("x.png", data[:len(data) // 2])})
        elif case == 1:
            r = client.post("/v1/restore", data={"task": "no-such-task"},
                            files={"image": ("x.png", self.image("small"))})
        elif case == 2:
            r = client.post("/v1/restore", data={"seed": "\u0667"},
                            files={"image": ("x.png", self.image("small"))})
        elif case == 3:
            r = client.post("/v1/restore", content=b'{"image": ',
                            headers={"content-type": "application/json"})
        else:
            r = client.post("/v1/restore", files={"image": ("x.png", bomb_header())})
        return r.status_code, None, r.text

    # -- the loops --------------------------------------------------------------------------
    def client_loop(self, deadline: float, budget: list[int]) -> None:
        with httpx.Client(base_url=self.url, timeout=900) as client:
            while time.monotonic() < deadline:
                with self.lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                kind = self.pick()
                try:
                    self.run_one(client, kind)
                except httpx.HTTPError as exc:
                    self.record(kind, 599, None, f"transport error: {exc}")

    def sample_loop(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    rss = metric(client.get("/metrics").text, "process_resident_memory_bytes")
                    with self.lock:
                        self.rss.append(((time.monotonic() - self.started) / 60, rss / 2 ** 20))
                except httpx.HTTPError:
                    pass
                stop.wait(5.0)

    def report(self, wall_s: float) -> dict:
        classes = {}
        for kind in WEIGHTS:
            lat = self.latency.get(kind, [])
            classes[kind] = {
                "count": sum(self.statuses[kind].values()),
                "statuses": {str(k): v for k, v in sorted(self.statuses[kind].items())},
                "p50_s": round(percentile(lat, 50), 3) if lat else None,
                "p95_s": round(percentile(lat, 95), 3) if lat else None,
            }
        done = sum(c["count"] for c in classes.values())
        ok = sum(v for kind in WEIGHTS for k, v in self.statuses[kind].items() if k < 300)
        return {"wall_s": round(wall_s, 1), "requests": done, "ok": ok,
                "requests_per_min": round(done / wall_s * 60, 2),
                "ok_per_min": round(ok / wall_s * 60, 2),
                "errors_5xx": len(self.errors_5xx), "first_5xx": self.errors_5xx[:5],
                "rss_mb_start": self.rss[0][1] if self.rss else None,
                "rss_mb_max": max(v for _, v in self.rss) if self.rss else None,
                "rss_mb_end": self.rss[-1][1] if self.rss else None,
                "rss": [(round(t, 3), round(v, 1)) for t, v in self.rss],
                "classes": classes}


def bomb_header() -> bytes:
    """A PNG whose header claims 60000x60000 pixels (its data is a 1x1 image's)."""
    import struct
    import zlib

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 60000, 60000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [p[0] for p in result["rss"]]
    v = [p[1] for p in result["rss"]]
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    ax.plot(t, v, color="tab:blue")
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_ylim(0, max(v) * 1.15 if v else 1)
    ax.set_title(f"soak: {result['requests']} requests in {result['wall_s'] / 60:.0f} min, "
                 f"{result['errors_5xx']} 5xx")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def table(result: dict) -> str:
    rows = [f"{'class':<10}{'count':>7}  {'p50 s':>8}{'p95 s':>8}  statuses"]
    for kind, c in result["classes"].items():
        p50 = f"{c['p50_s']:.2f}" if c["p50_s"] is not None else "-"
        p95 = f"{c['p95_s']:.2f}" if c["p95_s"] is not None else "-"
        rows.append(f"{kind:<10}{c['count']:>7}  {p50:>8}{p95:>8}  {c['statuses']}")
    rows.append(f"{result['requests']} requests in {result['wall_s']:.0f} s "
                f"({result['requests_per_min']}/min, {result['ok_per_min']} ok/min); "
                f"5xx: {result['errors_5xx']}; server RSS {result['rss_mb_start']:.0f} -> "
                f"max {result['rss_mb_max']:.0f} -> {result['rss_mb_end']:.0f} MiB")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server on this machine (default: start one)")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path, help="PNG of the server's RSS over time")
    args = p.parse_args(argv)
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("the soak test only talks to this machine (127.0.0.1)")
    images = {kind: load_images(args.images, side, 0)
              for kind, side in (("small", 64), ("medium", 128), ("large", 600))}
    images = {k: [data for _, data in v] for k, v in images.items()}

    def run(url: str) -> dict:
        soak = Soak(url, images, args.seed)
        stop = threading.Event()
        sampler = threading.Thread(target=soak.sample_loop, args=(stop,), daemon=True)
        sampler.start()
        deadline = time.monotonic() + 60 * args.minutes
        budget = [args.max_requests]
        threads = [threading.Thread(target=soak.client_loop, args=(deadline, budget))
                   for _ in range(args.concurrency)]
        start = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        stop.set()
        sampler.join()
        return soak.report(time.monotonic() - start)

    if args.url:
        result = run(args.url)
    else:
        with Server({}) as server:
            result = run(server.url)
    result["setup"] = {"minutes": args.minutes, "concurrency": args.concurrency,
                       "weights": WEIGHTS, "machine": platform.processor() or platform.machine(),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    return 1 if result["errors_5xx"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
