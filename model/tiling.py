"""Cutting a canvas into fixed-size overlapping tiles and blending them back.

Tiles let any image size run with memory bounded by the tile, and let tiles of
different requests batch together (they all have one shape). The plan is a pure
function of sizes; blending uses a smooth ramp so that overlaps never show the hard
seams a uniform average leaves (the official pixel chopping's known weakness).

``TiledDenoiser`` wraps a denoiser (see ``model.sampler``) so that every sampling step
runs tile by tile and the x0 predictions are blended into one canvas before the
posterior step: all tiles of an image advance through each step together, and the
noise stays the whole canvas's, so a tiled run equals an untiled one up to blending.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch

from .geometry import TilePlan, axis_cores, axis_starts, plan_tiles, tile_cores
from .sampler import Denoiser

__all__ = ["TilePlan", "axis_cores", "axis_starts", "plan_tiles", "tile_cores",
           "ramp_weights", "tiled_map", "TiledDenoiser"]


def ramp_weights(tile_h: int, tile_w: int, ramp: int, device=None,
                 dtype=torch.float32) -> torch.Tensor:
    """Blending weights [tile_h, tile_w]: a linear ramp over ``ramp`` pixels at each edge.

    Weights are strictly positive (the canvas border is covered by one tile only and
    the normalisation divides by the weight sum) and 1 in the interior.
    """
    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        if ramp <= 0:
            return torch.ones(n, dtype=torch.float64)
        return torch.minimum(torch.ones(n, dtype=torch.float64),
                             torch.minimum(i + 0.5, n - i - 0.5) / ramp)
    return torch.outer(axis(tile_h), axis(tile_w)).to(device=device, dtype=dtype)


def _chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int,
              overlap: int, scale: float, max_batch: int = 4, align: int = 1,
              progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Apply an image-to-image ``fn`` on overlapping tiles of x (BxCxHxW) and blend.

    ``fn`` maps a tile of size s to one of size s*scale (encoders: 1/f, decoders: f).
    Output tiles are blended with ``ramp_weights`` over the output-space overlap, so
    memory is bounded by ``tile`` whatever the image size.
    """
    b, _, h, w = x.shape
    plan = plan_tiles(h, w, tile, overlap, align)
    if plan.single:
        return fn(x)
    oh, ow = round(h * scale), round(w * scale)
    oth, otw = round(plan.tile_h * scale), round(plan.tile_w * scale)
    weights = ramp_weights(oth, otw, max(1, round(overlap * scale)), x.device, torch.float32)
    out: Optional[torch.Tensor] = None
    wsum = torch.zeros((1, 1, oh, ow), device=x.device, dtype=torch.float32)
    jobs = [(bi, top, left) for bi in range(b) for (top, left) in plan.boxes]
    done = 0
    for chunk in _chunks(jobs, max_batch):
        tiles = torch.cat([x[bi:bi + 1, :, t:t + plan.tile_h, l:l + plan.tile_w]
                           for bi, t, l in chunk])
        res = fn(tiles).float()
        if out is None:
            out = torch.zeros((b, res.shape[1], oh, ow), device=x.device, dtype=torch.float32)
        for k, (bi, t, l) in enumerate(chunk):
            ot, ol = round(t * scale), round(l * scale)
            out[bi, :, ot:ot + oth, ol:ol + otw] += res[k] * weights
            if bi == 0:
                wsum[0, 0, ot:ot + oth, ol:ol + otw] += weights
        done += len(chunk)
        if progress is not None:
            progress(done, len(jobs))
    assert out is not None
    return (out / wsum).to(x.dtype)


class TiledDenoiser:
    """A denoiser that runs ``inner`` on latent tiles of size ``tile`` and blends x0.

    lq and mask are cut at the matching place: their resolution is an integer multiple
    of the latent's (1 for x4 SR with an f4 autoencoder, 4 or 8 for inpainting/faces).
    Tiles of every batch item go through ``inner`` in batches of ``max_batch``.
    """

    def __init__(self, inner: Denoiser, tile: int, overlap: int, max_batch: int = 4,
                 align: int = 1):
        if overlap >= tile:
            raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
        self.inner, self.tile, self.overlap = inner, tile, overlap
        self.max_batch, self.align = max_batch, align

    def __call__(self, x: torch.Tensor, t: torch.Tensor, lq: Optional[torch.Tensor],
                 mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, _, h, w = x.shape
        plan = plan_tiles(h, w, self.tile, self.overlap, self.align)
        if plan.single:
            return self.inner(x, t, lq, mask)
        r_lq = lq.shape[-1] // w if lq is not None else 1
        r_mask = mask.shape[-1] // w if mask is not None else 1
        th, tw = plan.tile_h, plan.tile_w
        weights = ramp_weights(th, tw, max(1, self.overlap), x.device, torch.float32)
        out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
        wsum = torch.zeros((1, 1, h, w), device=x.device, dtype=torch.float32)
        jobs = [(bi, top, left) for bi in range(b) for (top, left) in plan.boxes]

        def crop(z: Optional[torch.Tensor], r: int, bi: int, top: int, left: int):
            if z is None:
                return None
            return z[bi:bi + 1, :, top * r:(top + th) * r, left * r:(left + tw) * r]

        for chunk in _chunks(jobs, self.max_batch):
            xs = torch.cat([crop(x, 1, *job) for job in chunk])
            ts = torch.stack([t[job[0]] for job in chunk])
            lqs = torch.cat([crop(lq, r_lq, *job) for job in chunk]) if lq is not None else None
            ms = torch.cat([crop(mask, r_mask, *job) for job in chunk]) if mask is not None else None
            pred = self.inner(xs, ts, lqs, ms).float()
            for k, (bi, top, left) in enumerate(chunk):
                out[bi, :, top:top + th, left:left + tw] += pred[k] * weights
                if bi == 0:
                    wsum[0, 0, top:top + th, left:left + tw] += weights
        return (out / wsum).to(x.dtype)
