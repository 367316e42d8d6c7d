"""``resshift bench``: latency and throughput of one model per backend configuration.

For every configuration (:data:`CONFIGS`: a backend and a precision), batch size and
latent tile size it times, best of ``repeat``:

* end to end: encode the bicubically upsampled LQ, the sampler's steps, decode,
  untiled, one batch (a latent tile of N is an N*f/sf square LQ: for the x4, f=4
  models ``--tile 64`` is the 64 -> 256 case);
* the UNet alone: one denoiser call on the batch.

Latency is seconds per batch; throughput is images (or UNet tiles) per second.
``realsr_v3-random`` is the full-size realsr_v3 architecture with random weights
(speed does not depend on the weights). Results: :class:`BenchRow` dicts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

# name -> (backend, precision)
CONFIGS = {
    "torch-fp32": ("torch", "fp32"),
    "torch-bf16": ("torch", "bf16"),
    "torch-bf16-all": ("torch", "bf16-all"),
    "onnxruntime": ("onnxruntime", "fp32"),
    "onnxruntime+bf16-decoder": ("onnxruntime", "bf16"),
    "torch-fp16": ("torch", "fp16"),          # CUDA autocast (codebook lookup in fp32)
    "tensorrt": ("tensorrt", "fp16"),         # fp16 engines from the fp16 graphs
    "auto": ("auto", "auto"),
}
RANDOM_MODEL = "realsr_v3-random"
# realsr_v3's architecture at reduced width (the shape of the official realsr_small
# reference model): the same graphs and code paths, built and run in seconds on a CPU
RANDOM_SMALL = "realsr-small-random"
SMALL_WIDTHS = {
    "unet": dict(model_channels=32, channel_mult=[1, 2, 2, 4], num_res_blocks=[2, 2, 2, 2],
                 num_head_channels=16, swin_embed_dim=32),
    "ddconfig": dict(ch=32, ch_mult=[1, 2, 4]),
    "autoencoder": dict(n_embed=64),
}


@dataclass
class BenchRow:
    """One configuration at one batch size and tile size (seconds are best of repeat)."""

    config: str
    backend: str
    batch: int
    tile: int          # latent tile side; the LQ is tile * f / sf pixels square
    lq: int
    out: int
    encode_s: float
    denoise_s: float   # all sampler steps
    unet_step_s: float  # denoise_s / steps
    decode_s: float
    total_s: float
    images_per_s: float
    unet_only_s: float  # one UNet call on the batch
    unet_tiles_per_s: float


def random_restorer(preset: str = "realsr_v3", device: str = "cpu", small: bool = False):
    """A preset's full-size architecture with seeded random weights (speed does not
    depend on the weights); ``small``: at the reduced widths of :data:`SMALL_WIDTHS`."""
    from model.config import config_from_preset
    from model.directory import build_networks
    from model.restorer import Restorer
    torch.manual_seed(0)
    cfg = config_from_preset(preset)
    if small:
        cfg.unet.update(SMALL_WIDTHS["unet"])
        cfg.autoencoder.update(SMALL_WIDTHS["autoencoder"])
        cfg.autoencoder["ddconfig"] = {**cfg.autoencoder["ddconfig"], **SMALL_WIDTHS["ddconfig"]}
        cfg.name = RANDOM_SMALL
    unet, ae = build_networks(cfg)
    return Restorer(cfg, unet, ae, device)


def load_restorer(spec: str, device: str = "cpu"):
    """A model directory, a bundled name, ``realsr_v3-random`` or ``realsr-small-random``."""
    if spec == RANDOM_MODEL:
        return random_restorer("realsr_v3", device)
    if spec == RANDOM_SMALL:
        return random_restorer("realsr_v3", device, small=True)
    import model
    return model.load(spec, device=device)


def _best(fn: Callable[[], dict], repeat: int) -> dict:
    best: dict = {}
    for _ in range(max(1, repeat)):
        run = fn()
        if not best or run["total"] < best["total"]:
            best = run
    return best


def bench_one(restorer, config: str, batch: int, tile: int, repeat: int,
              backend) -> BenchRow:
    """Time ``restorer`` on ``backend`` (already created for ``config``)."""
    r = restorer.using(backend)
    lq_side = tile * r.factor // r.scale
    lq = torch.rand(batch, 3, lq_side, lq_side, device=r.device) * 2 - 1
    gen = torch.Generator().manual_seed(0)

    def e2e() -> dict:
        t0 = time.perf_counter()
        z_y = r.encode_lq(lq)
        t1 = time.perf_counter()
        z0 = r.sample(lq, generator=gen, z_y=z_y)
        t2 = time.perf_counter()
        r.decode(z0)
        t3 = time.perf_counter()
        return {"encode": t1 - t0, "denoise": t2 - t1, "decode": t3 - t2, "total": t3 - t0}

    with torch.inference_mode():
        z_y = r.encode_lq(lq)                       # warm-up (and ONNX export if needed)
        cond = r.conditioning(lq, z_y) if r.spec.cond_lq else None
        denoiser = r.denoiser()
        t = torch.full((batch,), r.steps - 1, dtype=torch.long)   # the denoiser moves it
        x = torch.randn_like(z_y)
        denoiser(x, t, cond, None)

        def unet() -> dict:
            t0 = time.perf_counter()
            denoiser(x, t, cond, None)
            return {"total": time.perf_counter() - t0}
        unet_s = _best(unet, repeat)["total"]
        run = _best(e2e, repeat)
    return BenchRow(config=config, backend=backend.describe(), batch=batch, tile=tile,
                    lq=lq_side, out=lq_side * r.scale, encode_s=round(run["encode"], 3),
                    denoise_s=round(run["denoise"], 3),
                    unet_step_s=round(run["denoise"] / r.steps, 3),
                    decode_s=round(run["decode"], 3), total_s=round(run["total"], 3),
                    images_per_s=round(batch / run["total"], 3),
                    unet_only_s=round(unet_s, 3), unet_tiles_per_s=round(batch / unet_s, 3))


def run_bench(restorer, configs: Sequence[str], batches: Sequence[int],
              tiles: Sequence[int], repeat: int = 1, model_dir=None,
              cache: Optional[Path] = None,
              progress: Callable[[str], None] = lambda line: None) -> list[BenchRow]:
    """Every configuration x tile x batch. progress: one line per finished row."""
    from .families import create_backend

    rows = []
    for config in configs:
        name, precision = CONFIGS[config]
        progress(f"{config}: creating the backend")
        backend = create_backend(name, restorer, model_dir=model_dir, cache=cache,
                                 precision=precision)
        for tile in tiles:
            for batch in batches:
                progress(f"{config}: batch {batch}, tile {tile} ...")
                row = bench_one(restorer, config, batch, tile, repeat, backend)
                rows.append(row)
                progress(f"{config}: batch {batch}, tile {tile}: {row.total_s} s end to end, "
                         f"UNet {row.unet_only_s} s")
    return rows


def markdown(rows: Sequence[BenchRow]) -> str:
    """A table with the ratio of each row's total to torch-fp32 at the same shape."""
    ref = {(r.batch, r.tile): r.total_s for r in rows if r.config == "torch-fp32"}
    lines = ["| config | batch | LQ -> out | encode s | UNet step s | decode s | total s "
             "| img/s | UNet-only s | vs torch-fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = ref.get((r.batch, r.tile))
        ratio = f"{base / r.total_s:.2f}x" if base else "-"
        lines.append(f"| {r.config} | {r.batch} | {r.lq} -> {r.out} | {r.encode_s} | "
                     f"{r.unet_step_s} | {r.decode_s} | {r.total_s} | {r.images_per_s} | "
                     f"{r.unet_only_s} | {ratio} |")
    return "\n".join(lines)


def svg_plot(rows: Sequence[BenchRow], path: Path) -> None:
    """End-to-end latency against batch size, one line per configuration and tile."""
    from .charts import Line, write_line_chart
    series: dict[str, list[BenchRow]] = {}
    for r in rows:
        series.setdefault(f"{r.config} t{r.tile}", []).append(r)
    lines = [Line(i, label, [(r.batch, r.total_s) for r in mine], markers=True)
             for i, (label, mine) in enumerate(series.items())]
    top = max([r.total_s for r in rows] + [1e-3]) * 1.1
    write_line_chart(path, lines, sorted({r.batch for r in rows}), "batch size",
                     "end-to-end latency per batch (s)", top, legend_width=170)


def rows_json(rows: Sequence[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
