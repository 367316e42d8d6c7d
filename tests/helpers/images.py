"""A synthetic photo, PNG/JPEG bytes and back, and the uint8 PSNR the parity tests use."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
from PIL import Image


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image with smooth structure and noise texture, like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 5.0 + c) * np.cos(yy / 4.0 - c) for c in range(3)], -1)
    return np.clip(127.5 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray | Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data is a 1x1 image's)."""
    data = bytearray(encode(np.zeros((1, 1, 3), np.uint8)))
    ihdr = 8 + 8                                     # signature, then length + "IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255); ``inf`` when they are equal."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
