"""Bicubic-only downsampling (the classic "bicubic x4" SR setting).

``bicubic_degrade`` shrinks an HxWx3 [0, 1] image by an integer factor with an
antialiased bicubic filter (Pillow's, a = -0.5, the filter MATLAB's ``imresize`` uses),
then rounds to 8 bit. It draws nothing from the generator; it takes one anyway so that
every named degradation has the same signature.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from .ops import as_image, quantize


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """Antialiased bicubic shrink by ``scale``; output (H // scale) x (W // scale) x 3."""
    img = as_image(img)
    h, w = img.shape[:2]
    size = (max(1, w // scale), max(1, h // scale))
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c]), mode="F")
                        .resize(size, Image.Resampling.BICUBIC)) for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.float32)


def bicubic_degrade(gt: np.ndarray, rng: Optional[np.random.Generator] = None,
                    scale: int = 4) -> np.ndarray:
    """Bicubic x``scale`` LQ of ``gt`` on the 8-bit grid (``rng`` is not used)."""
    return quantize(bicubic_downsample(gt, scale))
