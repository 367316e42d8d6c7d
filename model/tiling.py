"""Cutting a canvas into fixed-size overlapping tiles and blending them back.

Tiles let any image size run with memory bounded by the tile, and let tiles of
different requests batch together (they all have one shape). The plan is a pure
function of sizes (``model.geometry``); blending uses a smooth ramp so that overlaps
never show the hard seams a uniform average leaves (the official pixel chopping's known
weakness).

Every tiler of both model families blends through one ``TileBlender``: ``tiled_map``
(the VAE), ``TiledDenoiser`` (the sampler), the service's step-by-step
``model.stepper.TiledJob``, and DiffIR's DIRformer tiles (``blend``). Inpainting's
known pixels go back in through the one ``paste_back``.

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
           "ramp_weights", "TileBlender", "blend", "paste_back", "tiled_map", "TiledDenoiser"]


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


class TileBlender:
    """The ramp-weighted average of a plan's tiles on one canvas, taken as tiles arrive.

    plan: where the tiles sit on the input canvas. overlap: the plan's overlap (input
    pixels). scale: output pixels per input pixel (tiles come out ``scale`` times the
    plan's size: 1 for denoisers, f for decoders, 1/f for encoders); the ramp spans the
    overlap in output pixels. batch: canvases blended side by side (item b's tiles go to
    canvas b; they share the plan, hence one weight sum).

    Memory: the float32 accumulator (batch x C x H x W, allocated on the first tile),
    a one-channel weight sum and one tile of weights. Sums depend on the order tiles are
    added in; callers add them in plan order, so every caller makes the same sums.
    ``result(inplace=True)`` + ``reset`` blend round after round (the sampler's steps)
    in that one accumulator, the weight sum made once.
    """

    def __init__(self, plan: TilePlan, overlap: int, scale: float = 1, batch: int = 1,
                 device: torch.device | str | None = None):
        self.plan, self.scale, self.batch = plan, scale, batch
        self.device = torch.device(device) if device is not None else None
        self.tile_h, self.tile_w = round(plan.tile_h * scale), round(plan.tile_w * scale)
        self.height, self.width = round(plan.height * scale), round(plan.width * scale)
        self.ramp = max(1, round(overlap * scale))
        self.acc: Optional[torch.Tensor] = None
        self._weights: Optional[torch.Tensor] = None
        self._wsum: Optional[torch.Tensor] = None
        self._wsum_done = False            # the weight sum is complete after one round

    def add(self, index: int, tile: torch.Tensor, item: int = 0) -> None:
        """Add the output tile (CxHxW or 1xCxHxW) of ``plan.boxes[index]`` to canvas
        ``item``."""
        if tile.dim() == 4:
            tile = tile[0]
        if self.acc is None:
            device = self.device if self.device is not None else tile.device
            self.acc = torch.zeros((self.batch, tile.shape[0], self.height, self.width),
                                   device=device, dtype=torch.float32)
        tile = tile.to(self.acc.device).float()
        if self.plan.single:
            self.acc[item].copy_(tile)
            return
        if self._weights is None:
            self._weights = ramp_weights(self.tile_h, self.tile_w, self.ramp,
                                         self.acc.device, torch.float32)
            self._wsum = torch.zeros((1, 1, self.height, self.width),
                                     device=self.acc.device, dtype=torch.float32)
        top, left = self.plan.boxes[index]
        t, l = round(top * self.scale), round(left * self.scale)
        th, tw = self.tile_h, self.tile_w
        self.acc[item, :, t:t + th, l:l + tw] += tile * self._weights
        if item == 0 and not self._wsum_done:
            self._wsum[0, 0, t:t + th, l:l + tw] += self._weights

    def result(self, inplace: bool = False) -> torch.Tensor:
        """The blended canvases (batch x C x H x W, float32), once every tile is in.
        ``inplace``: normalised in the accumulator itself (``reset`` it before adding
        the next round's tiles)."""
        if self.acc is None:
            raise RuntimeError("no tile was blended")
        if self.plan.single:
            return self.acc
        self._wsum_done = True
        return self.acc.div_(self._wsum) if inplace else self.acc / self._wsum

    def reset(self) -> None:
        """Empty the accumulator for another round of the same plan (the weight sum,
        the same every round, is kept)."""
        if self.acc is not None:
            self.acc.zero_()


def blend(tiles: Sequence[torch.Tensor], plan: TilePlan, overlap: int,
          scale: float = 1) -> torch.Tensor:
    """One canvas from all of its output tiles (1xCxhxw each, in plan order):
    1xCxHxW float32."""
    blender = TileBlender(plan, overlap, scale)
    for index, tile in enumerate(tiles):
        blender.add(index, tile)
    return blender.result()


def paste_back(generated: torch.Tensor, known: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    """Inpainting's result: the model's pixels (clamped to [-1, 1]) where ``mask`` is 1,
    the known pixels elsewhere. BxCxHxW images in [-1, 1], mask Bx1xHxW in [0, 1]."""
    return mask * generated.clamp(-1, 1) + (1 - mask) * known


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
    b = x.shape[0]
    plan = plan_tiles(x.shape[-2], x.shape[-1], tile, overlap, align)
    if plan.single:
        return fn(x)
    blender = TileBlender(plan, overlap, scale, batch=b, device=x.device)
    jobs = [(bi, i) for bi in range(b) for i in range(len(plan.boxes))]
    th, tw = plan.tile_h, plan.tile_w
    done = 0
    for chunk in _chunks(jobs, max_batch):
        tiles = torch.cat([x[bi:bi + 1, :, t:t + th, l:l + tw]
                           for bi, i in chunk for t, l in (plan.boxes[i],)])
        res = fn(tiles)
        for k, (bi, i) in enumerate(chunk):
            blender.add(i, res[k], bi)
        done += len(chunk)
        if progress is not None:
            progress(done, len(jobs))
    return blender.result().to(x.dtype)


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
        blender = TileBlender(plan, self.overlap, batch=b, device=x.device)
        jobs = [(bi, i) for bi in range(b) for i in range(len(plan.boxes))]

        def crop(z: Optional[torch.Tensor], r: int, bi: int, i: int):
            top, left = plan.boxes[i]
            return z[bi:bi + 1, :, top * r:(top + th) * r, left * r:(left + tw) * r]

        for chunk in _chunks(jobs, self.max_batch):
            xs = torch.cat([crop(x, 1, *job) for job in chunk])
            ts = torch.stack([t[job[0]] for job in chunk])
            lqs = torch.cat([crop(lq, r_lq, *job) for job in chunk]) if lq is not None else None
            ms = torch.cat([crop(mask, r_mask, *job) for job in chunk]) if mask is not None else None
            pred = self.inner(xs, ts, lqs, ms)
            for k, (bi, i) in enumerate(chunk):
                blender.add(i, pred[k], bi)
        return blender.result().to(x.dtype)
