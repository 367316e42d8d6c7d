"""Where tiles sit on a canvas: plain arithmetic on sizes, no tensors.

Kept free of torch so that the service's admission (which estimates a request's work
from its image header, in processes that load no model) uses the very plan the worker
will run. ``model.tiling`` re-exports these next to the blending code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def axis_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length) with >= ``overlap``.

    The first tile starts at 0 and the last ends at ``length``; the rest are spread
    evenly and rounded down to multiples of ``align``. A length that fits in one tile
    gives [0]. Raises if the tile cannot advance (overlap >= tile).
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    span = length - tile
    starts = [(round(i * span / (count - 1)) // align) * align for i in range(count)]
    starts[-1] = span
    if span % align:
        raise ValueError(f"length {length} - tile {tile} is not a multiple of align {align}")
    return sorted(set(starts))


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of an HxW canvas sit: ``boxes`` holds (top, left) offsets."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    boxes: tuple[tuple[int, int], ...]

    @property
    def single(self) -> bool:
        return len(self.boxes) == 1 and self.tile_h == self.height and self.tile_w == self.width


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> TilePlan:
    """Tile plan for an HxW canvas with ``tile``-sided tiles (clipped to the canvas).

    A canvas thinner than one tile gets tiles of the same area, not the same side: the
    short side is the canvas's and the long side grows (to a multiple of both sides'
    common divisor, so network alignment holds) up to ``tile**2`` pixels. A 10-pixel-high
    strip then costs as many tiles as its area needs, instead of one nearly empty square
    tile per ``tile - overlap`` pixels of its length.
    """
    th, tw = min(tile, height), min(tile, width)
    if th < tile and tw == tile:
        tw = min(width, _stretched(tile, th))
    elif tw < tile and th == tile:
        th = min(height, _stretched(tile, tw))
    tops = axis_starts(height, th, overlap, align)
    lefts = axis_starts(width, tw, overlap, align)
    return TilePlan(height, width, th, tw, tuple((t, l) for t in tops for l in lefts))


def fitted_tile(length: int, max_tile: int, overlap: int, align: int = 1) -> int:
    """The smallest tile side that covers ``length`` with overlaps of at least
    ``overlap`` in as few tiles as ``max_tile``-sided ones would need, rounded up to
    ``align``.

    Tiles of the maximum side leave whatever the last one sticks out as extra overlap
    (a 1024-pixel image in 512-pixel tiles with 64 of overlap: three per axis, 2.25x
    the pixels); the same three tiles fitted to the image are 384 pixels (1.27x).
    """
    if length <= max_tile:
        return length
    count = math.ceil((length - overlap) / (max_tile - overlap))
    side = math.ceil((length + (count - 1) * overlap) / count)
    return min(max_tile, -(-side // align) * align)


def _stretched(tile: int, short: int) -> int:
    """The long side of a tile of about ``tile**2`` pixels whose other side is ``short``."""
    unit = math.gcd(tile, short)
    return max(tile, tile * tile // short // unit * unit)


def axis_cores(starts: Sequence[int], tile: int, length: int) -> list[tuple[float, float]]:
    """For each tile on one axis, the fraction [lo, hi) of it that it "owns": the
    overlaps are split at their middle, so the owned parts partition [0, length)."""
    cuts = [0.0] + [(b + a + tile) / 2.0 for a, b in zip(starts, starts[1:])] + [float(length)]
    return [((cuts[i] - s) / tile, (cuts[i + 1] - s) / tile) for i, s in enumerate(starts)]


def tile_cores(plan: TilePlan) -> list[tuple[float, float, float, float]]:
    """(top, bottom, left, right) owned fractions of every box of ``plan``, in order."""
    tops = sorted({t for t, _ in plan.boxes})
    lefts = sorted({l for _, l in plan.boxes})
    rows = dict(zip(tops, axis_cores(tops, plan.tile_h, plan.height)))
    cols = dict(zip(lefts, axis_cores(lefts, plan.tile_w, plan.width)))
    return [(*rows[t], *cols[l]) for t, l in plan.boxes]


@dataclass(frozen=True)
class WorkShape:
    """How a model cuts one request into network calls, as plain numbers.

    The input (h x w pixels) is padded to ``multiple``; the canvas the network runs on
    is that times ``scale`` / ``factor`` (the SR scale over the latent factor for
    ResShift; 1 / 1 for DiffIR's LQ canvas); it is cut into ``tile``-sided tiles with
    ``overlap`` (``plan_tiles``, starts aligned to ``align``) unless ``tile`` is 0 or the
    canvas has at most ``whole_pixels`` pixels; every tile runs ``steps`` times. The
    output is ``out_scale`` times the input. The jobs take their plan from here, and
    workers announce it so that admission prices a request from its header alone.
    """

    multiple: int
    scale: int
    factor: int
    tile: int
    overlap: int
    steps: int
    out_scale: int
    whole_pixels: int = 0
    align: int = 1

    def canvas(self, height: int, width: int) -> tuple[int, int]:
        m = self.multiple
        ph, pw = -(-height // m) * m, -(-width // m) * m
        return ph * self.scale // self.factor, pw * self.scale // self.factor

    def plan(self, height: int, width: int) -> TilePlan:
        ch, cw = self.canvas(height, width)
        if not self.tile or ch * cw <= self.whole_pixels:
            return TilePlan(ch, cw, ch, cw, ((0, 0),))
        return plan_tiles(ch, cw, self.tile, self.overlap, self.align)

    def net_pixels(self, height: int, width: int) -> int:
        """Canvas pixels the network processes for the whole request (all steps)."""
        plan = self.plan(height, width)
        return len(plan.boxes) * plan.tile_h * plan.tile_w * self.steps

    def out_pixels(self, height: int, width: int) -> int:
        return height * width * self.out_scale ** 2

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class TileOptions:
    """Latent tile side and overlap (latent pixels) for sampling; pixel tile for the VAE.

    ``latent_tile`` must be a multiple of the UNet's window unit (64 for the official
    models). Tiles of this one shape are what the service batches across requests.
    """

    latent_tile: int = 64
    latent_overlap: int = 16
    vae_tile: int = 512          # pixels (encode input / decode output)
    vae_overlap: int = 64        # pixels
    max_batch: int = 4
    # Images larger than one VAE tile run whole, band by band (``model.nets.banded``),
    # while the full-size activations that keeps fit in ``vae_budget`` bytes; larger
    # ones are tiled. Their middle attention is local to ``vae_attn_window``-sided
    # latent windows (the 256 / 512 px crops the released autoencoders were trained on).
    vae_budget: int = 5 << 29    # bytes (2.5 GiB)
    vae_attn_window: int = 64    # latent positions
