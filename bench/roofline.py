"""How close the float32 CPU path runs to this CPU's arithmetic peak (docs/benchmarks.md).

    python bench/roofline.py --threads 1
    python bench/roofline.py --threads 2 --json roofline.json

Measures, in one process:

- the rate of the kernels everything else is built from: a 3x3 convolution (128 -> 128
  channels, 128x128, channels-last, oneDNN's direct kernel), the same in bf16, and float32
  matrix products of the shapes a Winograd convolution would hand to a GEMM;
- the floating-point operations each network of the full-size realsr_v3 architecture
  (seeded random weights) executes at 64 -> 256, counted by torch's FLOP counter on the
  code that runs (the banded encoder and decoder, the phase-split upsampling included),
  and the time each takes on the torch float32 path, hence its rate.

A network whose rate is near the convolution's leaves little for faster kernels: a
large speed-up then has to come from fewer operations or fewer bits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def kernel_rates(repeat: int) -> dict:
    """GFLOP/s of the building blocks."""
    out = {}
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(1, 128, 128, 128).contiguous(memory_format=torch.channels_last)
    flops = 2 * 128 * 128 * 9 * 128 * 128
    with torch.inference_mode():
        out["conv3x3_fp32"] = flops / best_time(lambda: conv(x), repeat) / 1e9
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["conv3x3_bf16"] = flops / best_time(lambda: conv(x), repeat) / 1e9
        # the GEMMs of Winograd F(2x2,3x3) (16 products over the 2x2-output tiles) and
        # F(4x4,3x3) (36 products over 4x4-output tiles) for the same convolution
        for name, p, tiles in (("gemm_winograd_f2", 16, 64 * 64),
                               ("gemm_winograd_f4", 36, 32 * 32)):
            a, b = torch.randn(p, tiles, 128), torch.randn(p, 128, 128)
            out[name] = 2 * p * tiles * 128 * 128 / best_time(lambda: torch.bmm(a, b), repeat) / 1e9
        a, b = torch.randn(4096, 128), torch.randn(128, 128)
        out["gemm_4096x128x128"] = 2 * 4096 * 128 * 128 / best_time(lambda: a @ b, repeat) / 1e9
    return {k: round(v, 1) for k, v in out.items()}


def network_rates(repeat: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from export.bench import random_restorer
    r = random_restorer("realsr_v3")
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    out = {}
    with torch.inference_mode():
        z_y = r.encode_lq(lq)
        cond = r.conditioning(lq, z_y) if r.spec.cond_lq else None
        denoiser = r.denoiser()
        t = torch.full((1,), r.steps - 1, dtype=torch.long)
        x = torch.randn_like(z_y)
        calls = {"encoder (256x256)": lambda: r.encode_lq(lq),
                 "unet, one call (64x64 latent)": lambda: denoiser(x, t, cond, None),
                 "decoder (to 256x256)": lambda: r.decode(z_y)}
        for name, fn in calls.items():
            with FlopCounterMode(display=False) as counter:
                fn()
            gflop = counter.get_total_flops() / 1e9
            seconds = best_time(fn, repeat)
            out[name] = {"gflop": round(gflop, 1), "s": round(seconds, 3),
                         "gflop_per_s": round(gflop / seconds, 1)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kernels = kernel_rates(max(args.repeat, 5))
    for k, v in kernels.items():
        print(f"{k:24s} {v:7.1f} GFLOP/s")
    nets = network_rates(args.repeat)
    peak = kernels["conv3x3_fp32"]
    for k, v in nets.items():
        print(f"{k:32s} {v['gflop']:7.1f} GFLOP  {v['s']:7.3f} s  {v['gflop_per_s']:6.1f} GFLOP/s"
              f"  ({100 * v['gflop_per_s'] / peak:.0f} % of the fp32 conv)")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "kernels": kernels,
                                         "networks": nets}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
