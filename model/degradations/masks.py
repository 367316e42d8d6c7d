"""LaMa-style random inpainting masks (ResShift ``datapipe/masks.py`` semantics).

Every generator returns an HxW bool array, True = area to fill (the convention of
``Restorer.restore``). Ranges follow the LaMa recipe (Suvorov et al., 2022) that ResShift trains with:

* ``irregular_mask``: 1-5 strokes of 1-5 segments; segment angle 0.01 + randint(4) rad
  (2 pi - angle on even strokes), length 10 + randint(200), width 5 + randint(100).
* ``box_mask``: 1-4 boxes of side randint[30, min(150, H - 2 margin, W - 2 margin)),
  kept ``margin`` (10) pixels from the border.
* ``outpainting_mask``: each side masked with probability 1/2 by a band of width
  U[0.04, 0.25) of the size; one side is forced when none fired.
* ``expand_mask``: everything but a kept (1 - p)H x (1 - p)W rectangle (centred or at a
  random offset).
* ``half_mask``: one of four half-plane masks at fraction ``p``.
* ``mixed_mask``: one generator per call with re-normalised weights (ResShift training:
  irregular, box and outpainting, 1/3 each), optionally inverted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


def draw_segment(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
                 width: float) -> None:
    """Paint a thick segment from p0 to p1 ((x, y), pixels) in place: every pixel whose
    centre lies within width/2 of the segment (round caps, like a wide pen)."""
    h, w = mask.shape
    r = max(width / 2.0, 0.5)
    x0, y0 = p0
    x1, y1 = p1
    left, right = int(max(0, math.floor(min(x0, x1) - r))), int(min(w, math.ceil(max(x0, x1) + r) + 1))
    top, bottom = int(max(0, math.floor(min(y0, y1) - r))), int(min(h, math.ceil(max(y0, y1) + r) + 1))
    if left >= right or top >= bottom:
        return
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float64)
    dx, dy = x1 - x0, y1 - y0
    seg2 = dx * dx + dy * dy
    if seg2 == 0:
        t = np.zeros_like(xx)
    else:
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / seg2, 0.0, 1.0)
    d2 = (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2
    mask[top:bottom, left:right] |= d2 <= r * r


def irregular_mask(shape: tuple[int, int], rng: np.random.Generator, max_angle: int = 4,
                   max_len: int = 200, max_width: int = 100, min_times: int = 1,
                   max_times: int = 5) -> np.ndarray:
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    times = int(rng.integers(min_times, max_times + 1))
    for i in range(times):
        sx, sy = float(rng.integers(w)), float(rng.integers(h))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + float(rng.integers(max_angle))
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            length = 10 + int(rng.integers(max_len))
            brush = 5 + int(rng.integers(max_width))
            ex = float(np.clip(sx + length * math.sin(angle), 0, w))
            ey = float(np.clip(sy + length * math.cos(angle), 0, h))
            draw_segment(mask, (sx, sy), (ex, ey), brush)
            sx, sy = ex, ey
    return mask


def box_mask(shape: tuple[int, int], rng: np.random.Generator, margin: int = 10,
             bbox_min_size: int = 30, bbox_max_size: int = 150, min_times: int = 1,
             max_times: int = 4) -> np.ndarray:
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    hi = min(bbox_max_size, h - 2 * margin, w - 2 * margin)
    lo = min(bbox_min_size, hi - 1)
    if hi <= 1:
        raise ValueError(f"image {w}x{h} too small for boxes with margin {margin}")
    for _ in range(int(rng.integers(min_times, max_times + 1))):
        bw, bh = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
        x = int(rng.integers(margin, w - margin - bw + 1))
        y = int(rng.integers(margin, h - margin - bh + 1))
        mask[y:y + bh, x:x + bw] = True
    return mask


def outpainting_mask(shape: tuple[int, int], rng: np.random.Generator, side_prob: float = 0.5,
                     min_frac: float = 0.04, max_frac: float = 0.25) -> np.ndarray:
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)

    def band(size: int) -> int:
        lo, hi = int(min_frac * size), int(max_frac * size)
        return int(rng.integers(lo, hi)) if hi > lo else max(lo, 1)

    def paint(side: int) -> None:
        if side == 0:
            mask[:, :band(w)] = True
        elif side == 1:
            mask[:band(h), :] = True
        elif side == 2:
            mask[:, w - band(w):] = True
        else:
            mask[h - band(h):, :] = True

    fired = [bool(rng.uniform() < side_prob) for _ in range(4)]    # left, top, right, bottom
    for side, on in enumerate(fired):
        if on:
            paint(side)
    if not any(fired):
        paint(int(rng.integers(4)))
    return mask


def expand_mask(shape: tuple[int, int], rng: np.random.Generator, masking_percent: float = 0.25,
                center: bool = True) -> np.ndarray:
    if not 0.05 <= masking_percent <= 0.95:
        raise ValueError(f"masking_percent must be in [0.05, 0.95], got {masking_percent}")
    h, w = shape
    kh, kw = int((1 - masking_percent) * h), int((1 - masking_percent) * w)
    if center:
        top, left = (h - kh) // 2, (w - kw) // 2
    else:
        top = int(rng.uniform(0.01, masking_percent) * h)
        left = int(rng.uniform(0.01, masking_percent) * w)
    mask = np.ones((h, w), dtype=bool)
    mask[top:top + kh, left:left + kw] = False
    return mask


def half_mask(shape: tuple[int, int], rng: np.random.Generator, p: float = 0.25) -> np.ndarray:
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    kind = int(rng.integers(4))
    if kind == 0:
        mask[int(p * h):, :] = True
    elif kind == 1:
        mask[:h - int(p * h), :] = True
    elif kind == 2:
        mask[:, int(p * w):] = True
    else:
        mask[:, :w - int(p * w)] = True
    return mask


MaskFn = Callable[[tuple[int, int], np.random.Generator], np.ndarray]
MASK_GENERATORS: dict[str, MaskFn] = {
    "irregular": irregular_mask, "box": box_mask, "outpainting": outpainting_mask,
    "expand": expand_mask, "half": half_mask,
}


@dataclass(frozen=True)
class MixedMaskSpec:
    """Weights of each generator (re-normalised) and the inversion probability."""

    weights: tuple[tuple[str, float], ...] = (("irregular", 1.0), ("box", 1.0),
                                              ("outpainting", 1.0))
    invert_prob: float = 0.0


def mixed_mask(shape: tuple[int, int], rng: np.random.Generator,
               spec: MixedMaskSpec = MixedMaskSpec()) -> np.ndarray:
    names = [n for n, _ in spec.weights]
    probs = np.asarray([p for _, p in spec.weights], dtype=np.float64)
    unknown = [n for n in names if n not in MASK_GENERATORS]
    if unknown:
        raise ValueError(f"unknown mask generators {unknown}; known: {sorted(MASK_GENERATORS)}")
    name = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    mask = MASK_GENERATORS[name](shape, rng)
    if spec.invert_prob > 0 and rng.uniform() < spec.invert_prob:
        mask = ~mask
    return mask
