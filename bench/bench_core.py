"""Stage-by-stage CPU/GPU timing of the core pipeline, and peak memory of a tiled run.

    python bench/bench_core.py                      # 64->256 and 256->1024, realsr_v3 size
    python bench/bench_core.py --sizes 64 --repeat 3
    python bench/bench_core.py --peak-image ../shared/data/realset80/XXXX.png --small-ref

Timings use the full-size realsr_v3 architecture with random weights (speed does not
depend on the weights). ``--peak-image`` restores one real image with tiling in a child
process and reports its peak resident memory (ru_maxrss). Results: a table on stdout and
JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def full_size_restorer(preset: str = "realsr_v3", device: str = "cpu"):
    from export.bench import random_restorer
    return random_restorer(preset, device)


def full_size_diffir(preset: str = "realsr_x4", device: str = "cpu", shared: Path = None):
    """DiffIR S2 at the released real-world SR size (25M parameters), random weights."""
    from model.diffir.config import load_diffir_config
    from model.diffir.network import build_network
    from model.diffir.restorer import DiffIRRestorer
    from model.diffir.schedule import make_schedule
    shared = shared or REPO.parent / "shared"
    presets = json.loads((shared / "reference" / "diffir-official" /
                          "diffir_realsr_presets.json").read_text())
    entry = presets[preset] if preset in presets else presets["presets"][preset]
    args = entry.get("config", entry.get("args", entry))
    cfg = load_diffir_config({"type": "DiffIRS2", **args})
    torch.manual_seed(0)
    net = build_network(cfg, "cpu")
    return DiffIRRestorer(cfg, net, make_schedule(cfg.timesteps, cfg.linear_start,
                                                  cfg.linear_end), device)


def time_diffir(r, size: int, repeat: int) -> dict:
    """Whole-image DiffIR forward (prior loop + DIRformer): inputs up to the whole-image
    limit run as one forward, as the official code does."""
    lq = torch.rand(1, 3, size, size)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        r.sample(lq, generator=torch.Generator().manual_seed(0))
        took = time.perf_counter() - t0
        best = took if best is None else min(best, took)
    return {"family": "diffir", "lq": size, "out": size * r.scale, "total_s": round(best, 3)}


def small_reference_restorer(shared: Path):
    import model
    ref = shared / "reference" / "resshift-official"
    meta = json.loads((ref / "realsr_small.json").read_text())
    official = {k: {"params": v} for k, v in meta["config"].items()}
    return model.import_official(official, ref / "realsr_small_unet.pth",
                                 ref / "realsr_small_autoencoder.pth")


def time_stages(r, size: int, repeat: int) -> dict:
    from model.geometry import TileOptions
    lq = torch.rand(1, 3, size, size) * 2 - 1
    tiles = TileOptions()
    best = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        z_y = r.encode_lq(lq, tiles)
        t1 = time.perf_counter()
        z0 = r.sample(lq, generator=torch.Generator().manual_seed(0), tiles=tiles, z_y=z_y)
        t2 = time.perf_counter()
        r.decode(z0, tiles)
        t3 = time.perf_counter()
        run = {"encode_s": t1 - t0, "denoise_s": t2 - t1, "decode_s": t3 - t2}
        run["total_s"] = sum(run.values())
        best = run if not best or run["total_s"] < best["total_s"] else best
    return {"lq": size, "out": size * r.scale, **{k: round(v, 3) for k, v in best.items()}}


def peak_child(image: str, small_ref: bool, shared: str) -> dict:
    code = f"""
import resource, sys, time, json
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from bench.bench_core import small_reference_restorer, full_size_restorer
from model.imageio import decode_image
r = small_reference_restorer(Path({shared!r})) if {small_ref} else full_size_restorer()
img = decode_image({image!r}, max_pixels=10**9).pixels
t = time.perf_counter()
out = r.restore(img, seed=0)
print(json.dumps({{"input": list(img.shape[:2]), "output": list(out.shape[:2]),
    "seconds": round(time.perf_counter() - t, 1),
    "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-image", help="image to restore with tiling for peak memory")
    parser.add_argument("--small-ref", action="store_true",
                        help="use the small reference model for --peak-image")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--diffir", action="store_true",
                        help="also time DiffIR S2 realsr_x4 (full size, random weights) at "
                             "the same sizes, in the same run")
    args = parser.parse_args()

    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
              platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": []}
    if args.sizes:
        r = full_size_restorer(device=args.device)
        print("| LQ -> out | encode s | 4 UNet steps s | decode s | total s |")
        print("|---|---|---|---|---|")
        with torch.inference_mode():
            for size in args.sizes:
                row = time_stages(r, size, args.repeat)
                result["rows"].append(row)
                print(f"| {row['lq']} -> {row['out']} | {row['encode_s']} | "
                      f"{row['denoise_s']} | {row['decode_s']} | {row['total_s']} |", flush=True)
    if args.sizes and args.diffir:
        d = full_size_diffir(device=args.device, shared=Path(args.shared))
        print("| DiffIR LQ -> out | total s |")
        print("|---|---|")
        with torch.inference_mode():
            for size in args.sizes:
                row = time_diffir(d, size, args.repeat)
                result["rows"].append(row)
                print(f"| {row['lq']} -> {row['out']} | {row['total_s']} |", flush=True)
    if args.peak_image:
        result["peak"] = peak_child(args.peak_image, args.small_ref, args.shared)
        print("peak:", json.dumps(result["peak"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
