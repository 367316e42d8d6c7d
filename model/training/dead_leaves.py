"""Procedural "dead leaves" images: occluding shapes with power-law sizes.

Natural photos are, to a first approximation, objects of every scale hiding one another:
their edges, occlusions and scale-invariant statistics are what an SR model must learn,
and the dead-leaves model reproduces them with no photo at all (Matheron's model; its
use as training data for restoration networks: Achddou et al., "Synthetic images as a
regularity prior for image restoration neural networks", 2021). The demo model has only
a couple of dozen shippable photos; these images add edge and occlusion variety that
needs no licence and no download, and each one is a pure function of its index.

Each image: ellipses placed front to back (each covers only what is still uncovered)
with radii drawn from p(r) ~ r^-3, colours of moderate saturation, a flat fill, a
linear gradient or a sinusoidal two-colour pattern, rendered at twice the size and
area-downscaled so edges are anti-aliased as in a photo.
"""

from __future__ import annotations

import colorsys

import numpy as np

from ..degradations.ops import resize

SOURCE = "dead-leaves"
COUNT = 12           # images in the source ("dead-leaves"; "dead-leaves:N" asks for N)
MAX_COUNT = 400
SIZE = 512           # their side, pixels
VERSION = 1          # bump when the rendering changes (recorded in provenance)


def _radius(rng: np.random.Generator, rmin: float, rmax: float) -> float:
    """A radius with density ~ r^-3 on [rmin, rmax] (inverse CDF)."""
    u = rng.uniform()
    return float((rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """RGB in [0, 1]: hue uniform, saturation mostly low, value spread (photo-like)."""
    h, s, v = rng.uniform(), rng.beta(1.2, 2.5), rng.beta(2.0, 1.6)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _fill(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The leaf's colours at (yy, xx), shape (n, 3)."""
    c0 = _colour(rng)
    kind = rng.uniform()
    if kind < 0.6:
        return np.broadcast_to(c0, (yy.size, 3))
    c1 = _colour(rng)
    theta = rng.uniform(0, np.pi)
    proj = (np.cos(theta) * xx + np.sin(theta) * yy).astype(np.float32)
    if kind < 0.88:  # linear gradient across the leaf (shading)
        span = max(float(proj.max() - proj.min()), 1.0)
        w = (proj - proj.min()) / span
    else:  # stripes of a random period
        period = rng.uniform(6.0, 60.0)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    return c0 * (1 - w[:, None]) + c1 * w[:, None]


def render(index: int, size: int = SIZE) -> np.ndarray:
    """Image ``index`` of the source: ``size`` x ``size`` x 3 float32 in [0, 1]."""
    rng = np.random.default_rng([0xDEAD1EAF, VERSION, int(index)])
    n = 2 * size                       # rendered at 2x, then area-downscaled
    img = np.zeros((n, n, 3), np.float32)
    free = np.ones((n, n), bool)
    rmin, rmax = n * 0.01, n * 0.4   # 5 to 200 px at the final size
    remaining = n * n
    for _ in range(100_000):
        if remaining <= n * n // 2000:   # the last specks would take thousands of tries
            break
        r = _radius(rng, rmin, rmax)
        aspect = rng.uniform(0.35, 1.0)
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(-r, n + r, size=2)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, n)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, n)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        ca, sa = np.cos(angle), np.sin(angle)
        u, v = ca * dx + sa * dy, (-sa * dx + ca * dy) / aspect
        inside = (u * u + v * v <= r * r) & free[y0:y1, x0:x1]
        if not inside.any():
            continue
        iy, ix = np.nonzero(inside)
        img[y0 + iy, x0 + ix] = _fill(rng, yy[iy, ix], xx[iy, ix])
        free[y0 + iy, x0 + ix] = False
        remaining -= iy.size
    img[free] = _colour(rng)             # what is left shows the leaf behind them all
    return np.clip(resize(img, (size, size), "area"), 0.0, 1.0).astype(np.float32)


def parse_source(text: str) -> int | None:
    """How many images a data source names (``dead-leaves`` or ``dead-leaves:N``), or
    None when it is not this generator."""
    name, sep, count = str(text).partition(":")
    if name != SOURCE:
        return None
    if not sep:
        return COUNT
    # at most MAX_COUNT: a training pool caches decoded images only up to 512 of them,
    # and each render costs about a second
    if not (count.isascii() and count.isdigit()) or not 1 <= int(count) <= MAX_COUNT:
        raise ValueError(f"cannot read data source {text!r}: write {SOURCE}:N with N "
                         f"from 1 to {MAX_COUNT} images (or {SOURCE} for {COUNT})")
    return int(count)


def provenance(index: int) -> dict:
    """What training provenance records of image ``index`` (enough to render it again)."""
    return {"generator": SOURCE, "version": VERSION, "index": int(index), "size": SIZE}
