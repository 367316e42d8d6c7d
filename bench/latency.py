"""Sequential request latency against a running service: total vs inference time.

The difference between the two is what the service adds around the model (HTTP,
validation, PNG coding and, with --role api/worker, the Redis hop), so running it once
against `resshift serve` and once against an api + worker pair compares the two modes.

    RESSHIFT_TORCH_THREADS=1 resshift serve --port 8200 &
    python bench/latency.py http://127.0.0.1:8200
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "val_sr" / "lq"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--image", type=Path, default=None,
                    help="input image (default: the first of ../shared/data/val_sr/lq)")
    ap.add_argument("-n", type=int, default=12, help="requests (the first 2 are warm-up)")
    args = ap.parse_args()
    image = args.image or sorted(DEFAULT_IMAGE.iterdir())[0]
    body = image.read_bytes()
    totals, inference = [], []
    for i in range(args.n):
        start = time.perf_counter()
        r = httpx.post(args.url + "/v1/restore", files={"image": (image.name, body)},
                       data={"seed": str(i)}, timeout=600)
        r.raise_for_status()
        totals.append(time.perf_counter() - start)
        inference.append(float(r.headers["x-inference-seconds"]))
    totals, inference = totals[2:], inference[2:]
    overhead = [t - s for t, s in zip(totals, inference)]
    print(f"{args.url}: {len(totals)} requests of {image.name}; median total "
          f"{statistics.median(totals) * 1000:.0f} ms, inference "
          f"{statistics.median(inference) * 1000:.0f} ms, around it "
          f"{statistics.median(overhead) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
