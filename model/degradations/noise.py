"""Additive Gaussian and Poisson (shot) noise, in colour or gray, as Real-ESRGAN adds it.

* Gaussian: ``img + sigma * n``, n ~ N(0, 1) per pixel and channel (colour) or one
  value per pixel shared by the three channels (gray); sigma in [0, 1] units.
* Poisson: the image is quantised to 8 bit, ``vals = 2^ceil(log2(#distinct values))``
  and the noise is ``(Poisson(img * vals) / vals - img) * scale``; gray noise is drawn
  on the BT.601 luma and added to every channel.

Both clip the result to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ops import quantize, rgb_to_gray


def gaussian_noise(img: np.ndarray, sigma: float, gray: bool,
                   rng: np.random.Generator) -> np.ndarray:
    """Add N(0, sigma^2) noise (sigma in [0, 1] units); clip to [0, 1]."""
    h, w, c = img.shape
    if gray:
        n = rng.standard_normal((h, w, 1), dtype=np.float32)
    else:
        n = rng.standard_normal((h, w, c), dtype=np.float32)
    return np.clip(img + np.float32(sigma) * n, 0.0, 1.0).astype(np.float32)


def _poisson_part(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    q = quantize(x) if x.ndim == 3 else quantize(np.repeat(x[..., None], 3, 2))[..., 0]
    distinct = len(np.unique(q))
    vals = 2.0 ** math.ceil(math.log2(max(distinct, 2)))
    return (rng.poisson(q.astype(np.float64) * vals) / vals - q).astype(np.float32)


def poisson_noise(img: np.ndarray, scale: float, gray: bool,
                  rng: np.random.Generator) -> np.ndarray:
    """Add signal-dependent Poisson noise times ``scale``; clip to [0, 1]."""
    if gray:
        noise = _poisson_part(np.clip(rgb_to_gray(img), 0.0, 1.0), rng)[..., None]
    else:
        noise = _poisson_part(np.clip(img, 0.0, 1.0), rng)
    return np.clip(img + np.float32(scale) * noise, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class NoiseSpec:
    """Random noise of one Real-ESRGAN stage.

    gaussian_prob: Gaussian (else Poisson); sigma_range in 8-bit units (divided by 255);
    poisson_range: Poisson scale; gray_prob: channel-shared noise.
    """

    gaussian_prob: float = 0.5
    sigma_range: tuple[float, float] = (1.0, 30.0)
    poisson_range: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4


def random_noise(img: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    """Gaussian with ``spec.gaussian_prob`` else Poisson, gray with ``spec.gray_prob``."""
    if rng.uniform() < spec.gaussian_prob:
        sigma = float(rng.uniform(*spec.sigma_range)) / 255.0
        gray = bool(rng.uniform() < spec.gray_prob)
        return gaussian_noise(img, sigma, gray, rng)
    scale = float(rng.uniform(*spec.poisson_range))
    gray = bool(rng.uniform() < spec.gray_prob)
    return poisson_noise(img, scale, gray, rng)
