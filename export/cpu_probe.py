"""Whether bf16 pays on this CPU: measured, not read from the CPU's flags.

A CPU that lists AVX512-BF16 may still run bf16 convolutions slower than float32. On a
2-vCPU AMD EPYC with AVX512-BF16 (no AMX) oneDNN's bf16 3x3 convolution ran at twice the
float32 rate; on a 2-vCPU Intel Xeon with AVX512-BF16 and AVX512-FP16 but no AMX it ran
at 0.5-0.65x (docs/benchmarks.md, 2026-12-03), so a bf16 decoder chosen by flags made
the default path slower than float32 there. :func:`bf16_speedup` times the kind of work
the VQGAN decoder does (a 3x3 convolution, 256 channels, channels-last) both ways, a
fraction of a second once per process and thread count, and ``auto`` precision takes
bf16 only where it measured faster by :data:`BF16_MIN_SPEEDUP`.
"""

from __future__ import annotations

import threading
import time

import torch
import torch.nn.functional as F

# bf16 must beat float32 by this much to be chosen: it costs fidelity (45 dB from float32
# for the decoder), so a tie or a gain inside the probe's noise keeps float32
BF16_MIN_SPEEDUP = 1.2

_CHANNELS, _SIDE, _RUNS = 256, 64, 3


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_measured: dict[int, float] = {}
# one probe at a time: two workers probing together would slow each other and could
# cache different answers, hence serve at different precisions
_lock = threading.Lock()


def _measure() -> float:
    gen = torch.Generator().manual_seed(0)        # leaves the global generator alone
    weight = torch.randn(_CHANNELS, _CHANNELS, 3, 3, generator=gen) * 0.02
    weight = weight.contiguous(memory_format=torch.channels_last)
    bias = torch.zeros(_CHANNELS)
    x = torch.randn(1, _CHANNELS, _SIDE, _SIDE, generator=gen)
    x = x.contiguous(memory_format=torch.channels_last)

    def fp32():
        with torch.autocast("cpu", enabled=False):     # whatever the caller's context
            F.conv2d(x, weight, bias, padding=1)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.conv2d(x, weight, bias, padding=1)

    with torch.inference_mode():
        fp32(), bf16()                      # first calls pick and JIT the kernels
        # interleaved, best of each: a burst of other load hits both alike
        t32 = tbf = float("inf")
        for _ in range(_RUNS):
            t32 = min(t32, _seconds(fp32))
            tbf = min(tbf, _seconds(bf16))
    return t32 / tbf


def bf16_speedup() -> float:
    """float32 time over bf16-autocast time for a 3x3 convolution of 256 channels on
    64x64 (channels-last) at torch's current thread count: above 1 means bf16 is
    faster here. Measured once per thread count (0.3-0.5 s on 2 vCPUs)."""
    threads = torch.get_num_threads()
    with _lock:
        if threads not in _measured:
            _measured[threads] = _measure()
        return _measured[threads]
