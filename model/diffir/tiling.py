"""Large inputs for DiffIR: when the DIRformer runs on tiles, and how the tiles are blended.

The DIRformer's "transposed" attention is global over the pixels (each block's per-head
C/h x C/h Gram matrix sums over all of them), so its cost is linear in H*W but nothing
bounds its activations. Measured peak memory of one forward of the released x4
architecture (float32, CPU, random weights, RSS growth over the loaded model):

    LQ 64x64: 161 MiB (1.4 s)   128x128: 492 MiB (8 s)   256x256: 1417 MiB (56 s)

(one thread, ``nice``d next to other jobs): past the fixed costs, about 22 KiB per LQ
pixel, so a 1024x1024 LQ would want some 22 GiB. CPEN_S2 (the condition encoder) needs
about 15% of that (25, 60, 218 MiB at the same sizes).

Policy (``DiffIRTiling``): a padded LQ of at most ``max_whole_pixels`` runs in one piece,
exactly as the official code does; a larger one runs the DIRformer on overlapping square
tiles of ``tile`` LQ pixels (multiples of the input multiple, starts aligned to it) and
blends their outputs with ResShift's blending (``model.tiling.blend``: linear ramps over
the overlap).

How tiling changes results: every tile's attention normalises over its own pixels only,
so a tiled image is not the whole-image result, though close away from the seams, and
the ramps hide the seams. The prior is NOT per tile: an image has ONE prior draw x_T
(from its seed) and ONE IPR. CPEN conditions on the whole image (run in tiles with a halo
wider than its receptive field, which gives the whole-image features exactly), the IPR
diffusion runs once, and every tile is modulated by that same IPR, so all tiles agree on
the degradation they remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import InputImageError
from ..tiling import TilePlan, plan_tiles

# CPEN_S2's receptive field: 22 stacked 3x3 convolutions (1 + 2 per residual block for
# the released n_encoder_res = 9, + 3) see 22 pixels to each side; ``condition_halo``
# computes it for any n_encoder_res.
_CPEN_FIXED_CONVS = 4


@dataclass(frozen=True)
class DiffIRTiling:
    """When and how the DIRformer is tiled, in LQ pixels (after padding).

    max_whole_pixels: padded LQ images up to this many pixels run whole (default 256x256,
    about 1.4 GiB of activations for the released x4 model on the CPU).
    tile / overlap: the tiles beyond that (LQ pixels, multiples of the input multiple).
    """

    max_whole_pixels: int = 256 * 256
    tile: int = 256
    overlap: int = 32

    def plan(self, height: int, width: int, align: int) -> TilePlan:
        """Where the tiles of a padded LQ of height x width sit (one box: run whole)."""
        if height * width <= self.max_whole_pixels:
            return whole(height, width)
        return plan_tiles(height, width, self.tile, self.overlap, align)


def whole(height: int, width: int) -> TilePlan:
    """The plan of an untiled run."""
    return TilePlan(height, width, height, width, ((0, 0),))


def tiling_for(tile: Optional[int], multiple: int) -> Optional[DiffIRTiling]:
    """``restore``'s ``tile`` argument as a policy.

    None: the default policy (whole up to 256x256 LQ pixels, tiles of 256 beyond);
    0: never tile (None is returned); N: tiles of N LQ pixels (a multiple of
    ``multiple``) whenever the image is larger than one tile, overlap N/4.
    """
    if tile is None:
        return DiffIRTiling()
    if tile == 0:
        return None
    if tile < 0 or tile % multiple:
        raise InputImageError(f"DiffIR tiling takes a tile side that is a positive multiple "
                              f"of {multiple} LQ pixels (or 0 = never tile), got {tile}")
    overlap = max(multiple, tile // 4 // multiple * multiple) if tile > multiple else 0
    return DiffIRTiling(max_whole_pixels=0, tile=tile, overlap=overlap)


def crop_tiles(lq: torch.Tensor, plan: TilePlan) -> list[torch.Tensor]:
    """The LQ crops (1x3xthxtw each) of a padded 1x3xHxW image, in plan order."""
    th, tw = plan.tile_h, plan.tile_w
    return [lq[..., top:top + th, left:left + tw] for top, left in plan.boxes]


def condition_halo(n_encoder_res: int) -> int:
    """Pixels CPEN_S2's features see beyond a pixel (its stacked 3x3 convolutions)."""
    return 2 * n_encoder_res + _CPEN_FIXED_CONVS


@torch.no_grad()
def tiled_condition(encoder: torch.nn.Module, lq: torch.Tensor, plan: TilePlan,
                    halo: int) -> torch.Tensor:
    """CPEN_S2 (B=1) of the whole image, computed tile by tile: (1, 256).

    CPEN ends in a global average pool, so the condition is the mean of its last feature
    map over all pixels. Each tile runs on its crop widened by ``halo`` pixels (at least
    the receptive field), keeps its own non-overlapping part of the feature map and adds
    it to a running sum: the same features as a whole-image run, up to summation order.
    """
    r = encoder.unshuffle
    x = torch.nn.functional.pixel_unshuffle(lq, r) if r > 1 else lq
    h, w = x.shape[-2:]
    features = encoder.E[:-1]               # everything but the AdaptiveAvgPool2d
    tops = sorted({t // r for t, _ in plan.boxes}) + [h]
    lefts = sorted({l // r for _, l in plan.boxes}) + [w]
    total = None
    for y0, y1 in zip(tops, tops[1:]):        # the tiles' starts partition the image
        for x0, x1 in zip(lefts, lefts[1:]):
            a, b = max(0, y0 - halo), min(h, y1 + halo)
            c, d = max(0, x0 - halo), min(w, x1 + halo)
            f = features(x[..., a:b, c:d])[..., y0 - a:y1 - a, x0 - c:x1 - c]
            part = f.sum(dim=(-2, -1))
            total = part if total is None else total + part
    return encoder.mlp(total / (h * w))
