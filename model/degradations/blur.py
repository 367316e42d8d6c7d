"""Gaussian and motion blur for deblurring (same size in and out).

* Gaussian: isotropic kernel, sigma ~ U(sigma_range), size ``2 ceil(3 sigma) + 1``.
* Motion: a straight camera shake of length L ~ U(length_range) pixels at angle
  theta ~ U(0, pi), rendered as an antialiased line (points along the segment
  splatted bilinearly), normalised to sum 1.

``blur_degrade`` picks one (Gaussian with ``gaussian_prob``), adds optional small
Gaussian noise and rounds to 8 bit. These ranges are this project's choice (the
references define no deblurring pipeline); change them through ``BlurSpec``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .kernels import gaussian_kernel
from .noise import gaussian_noise
from .ops import as_image, filter2d, quantize


def motion_kernel(length: float, angle: float, size: int | None = None) -> np.ndarray:
    """Linear motion blur kernel of ``length`` pixels along ``angle`` (radians, 0 =
    horizontal, counter-clockwise). ``size`` (odd) defaults to the smallest that fits."""
    if length <= 0:
        raise ValueError(f"motion length must be positive, got {length}")
    if size is None:
        size = 2 * int(math.ceil(length / 2.0)) + 1
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    k = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    n = max(2, int(math.ceil(length * 8)))
    for s in np.linspace(-length / 2.0, length / 2.0, n):
        x = c + s * math.cos(angle)
        y = c - s * math.sin(angle)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                yy, xx = y0 + dy, x0 + dx
                if 0 <= yy < size and 0 <= xx < size:
                    k[yy, xx] += wy * wx
    return k / k.sum()


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    size = 2 * int(math.ceil(3 * sigma)) + 1
    return filter2d(as_image(img), gaussian_kernel(size, sigma))


def motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    return filter2d(as_image(img), motion_kernel(length, angle))


@dataclass(frozen=True)
class BlurSpec:
    gaussian_prob: float = 0.5
    sigma_range: tuple[float, float] = (0.5, 4.0)
    length_range: tuple[float, float] = (3.0, 25.0)
    noise_range: tuple[float, float] = (0.0, 5.0)          # 8-bit units


def blur_degrade(gt: np.ndarray, rng: np.random.Generator,
                 spec: BlurSpec = BlurSpec()) -> np.ndarray:
    """Blurred (Gaussian or motion), lightly noisy copy of ``gt`` on the 8-bit grid."""
    img = as_image(gt)
    if rng.uniform() < spec.gaussian_prob:
        out = gaussian_blur(img, float(rng.uniform(*spec.sigma_range)))
    else:
        length = float(rng.uniform(*spec.length_range))
        out = motion_blur(img, length, float(rng.uniform(0.0, math.pi)))
    sigma = float(rng.uniform(*spec.noise_range))
    if sigma > 0:
        out = gaussian_noise(out, sigma / 255.0, False, rng)
    return quantize(out)
