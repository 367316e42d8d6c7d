"""Image quality metrics as pure numpy functions: PSNR and SSIM, RGB or Y channel.

Conventions (those of the SR literature and BasicSR's ``calculate_psnr/ssim``):

* inputs are HxWx3 (or HxW) arrays; uint8 is read as [0, 255], floats as [0, 1]
  (both are compared on the [0, 255] scale, so the numbers do not depend on dtype);
* ``crop_border`` pixels are dropped on every side first (SR: the scale factor);
* ``y_channel=True`` compares the BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B
  (R, G, B in [0, 1]; Y in [16, 235]) instead of the three RGB channels;
* SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
  L = 255, computed per channel on the "valid" part of the filtered image, averaged.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0


def to_255(img: np.ndarray) -> np.ndarray:
    """uint8 -> float64 as is; floats in [0, 1] -> times 255."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    return img.astype(np.float64) * 255.0


def rgb_to_y(img255: np.ndarray) -> np.ndarray:
    """BT.601 luma of an HxWx3 image on the [0, 255] scale; returns HxW in [16, 235]."""
    x = np.asarray(img255, dtype=np.float64) / 255.0
    return 16.0 + x[..., 0] * 65.481 + x[..., 1] * 128.553 + x[..., 2] * 24.966


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool
             ) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_255(a), to_255(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if crop_border:
        c = int(crop_border)
        if 2 * c >= min(a.shape[:2]):
            raise ValueError(f"crop_border {c} leaves nothing of a {a.shape[1]}x{a.shape[0]} image")
        a, b = a[c:-c, c:-c], b[c:-c, c:-c]
    if y_channel:
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError("y_channel needs HxWx3 RGB images")
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """10 log10(255^2 / MSE) in dB; ``inf`` for identical images."""
    a, b = _prepare(a, b, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The 1-D normalised Gaussian of SSIM (the 2-D window is its outer product)."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of an HxW array with the 1-D kernel ``g``."""
    from numpy.lib.stride_tricks import sliding_window_view
    rows = sliding_window_view(x, len(g), axis=0) @ g          # (H-k+1) x W
    return sliding_window_view(rows, len(g), axis=1) @ g        # (H-k+1) x (W-k+1)


def _ssim_plane(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> float:
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a ** 2
    var_b = _filter_valid(b * b, g) - mu_b ** 2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Mean SSIM (per channel for RGB, then averaged); 1.0 for identical images."""
    a, b = _prepare(a, b, crop_border, y_channel)
    g = gaussian_window()
    if min(a.shape[:2]) < len(g):
        raise ValueError(f"SSIM needs images of at least {len(g)}x{len(g)} after cropping")
    if a.ndim == 2:
        return _ssim_plane(a, b, g)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c], g) for c in range(a.shape[2])]))


def all_metrics(restored: np.ndarray, gt: np.ndarray, crop_border: int = 0) -> dict[str, float]:
    """{"psnr", "ssim", "psnr_y", "ssim_y"} of ``restored`` against ``gt``."""
    return {
        "psnr": psnr(restored, gt, crop_border),
        "ssim": ssim(restored, gt, crop_border),
        "psnr_y": psnr(restored, gt, crop_border, y_channel=True),
        "ssim_y": ssim(restored, gt, crop_border, y_channel=True),
    }
