"""Fair sharing, measured on a real server: the latency of a small request on an idle
server, and while a max-size request is being denoised.

    python bench/fairness.py --json bench/results/fairness.json

starts ``resshift serve`` (the bundled model unless RESSHIFT_MODELS says otherwise) on a
loopback port; sends a 64x64 image ``--repeats`` times to the idle server; then submits a
2000x2000 job (``RESSHIFT_MAX_PIXELS``), waits until it is denoising and sends the 64x64
image again ``--repeats`` times, one after the other. It prints both latencies (median),
the server's mean UNet batch time (from /metrics) and the target of docs/service.md:
busy <= 2 x idle + one batch. The large job is then canceled (its own completion is
proven by the test suite; here it would only take the machine for half an hour).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.load import Server, synthetic_png  # noqa: E402


def batch_stats(client: httpx.Client) -> tuple[float, float]:
    """(sum of seconds, count) of denoise batches so far."""
    total = count = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("resshift_inference_duration_seconds_sum") and 'stage="denoise"' in line:
            total += float(line.rsplit(" ", 1)[1])
        if line.startswith("resshift_inference_duration_seconds_count") and 'stage="denoise"' in line:
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def timed(client: httpx.Client, data: bytes) -> float:
    start = time.monotonic()
    r = client.post("/v1/restore", files={"image": ("s.png", data)})
    r.raise_for_status()
    return time.monotonic() - start


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large", type=int, default=2000, help="side of the large request")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    small = synthetic_png(64, 1)
    with Server({}) as server, httpx.Client(base_url=server.url, timeout=900) as client:
        timed(client, small)                                   # first request: warm
        idle = [timed(client, small) for _ in range(args.repeats)]
        job = client.post("/v1/jobs", files={"image": ("l.png", synthetic_png(args.large, 2))})
        job.raise_for_status()
        job_id = job.json()["id"]
        before = batch_stats(client)
        end = time.monotonic() + 600
        while batch_stats(client)[1] <= before[1]:           # the large job is denoising
            if time.monotonic() > end:
                raise SystemExit("the large job did not start within 10 minutes")
            time.sleep(0.2)
        busy = [timed(client, small) for _ in range(args.repeats)]
        status = client.get(f"/v1/jobs/{job_id}").json()["status"]
        after = batch_stats(client)
        client.delete(f"/v1/jobs/{job_id}")
    batch_s = (after[0] - before[0]) / max(1.0, after[1] - before[1])
    result = {"idle_s": idle, "busy_s": busy, "idle_median_s": statistics.median(idle),
              "busy_median_s": statistics.median(busy), "mean_batch_s": batch_s,
              "large_side": args.large, "large_status_when_small_done": status,
              "target_s": 2 * statistics.median(idle) + batch_s}
    result["met"] = result["busy_median_s"] <= result["target_s"]
    print(f"64x64 alone: {result['idle_median_s']:.2f} s; while a {args.large}x{args.large} "
          f"job runs ({status}): {result['busy_median_s']:.2f} s; mean batch "
          f"{batch_s:.3f} s; target 2 x idle + batch = {result['target_s']:.2f} s: "
          f"{'met' if result['met'] else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
