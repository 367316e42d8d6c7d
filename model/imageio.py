"""Decoding user images into HxWx3 uint8 RGB, and encoding results.

Every odd input either becomes a plain RGB array with a note saying what was done
(EXIF rotation, grayscale, alpha, 16-bit, CMYK, palette) or raises ``InputImageError``
with a message that says what to fix. The pixel limit is checked from the header,
before any decoding, so a decompression bomb never allocates.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, InputImageError

DEFAULT_MAX_PIXELS = 16_000_000
MIN_SIDE = 8
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


@dataclass
class DecodedImage:
    pixels: np.ndarray            # HxWx3 uint8 RGB
    notes: list[str] = field(default_factory=list)
    source_format: str = ""


def _open(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS,
          what: str = "image") -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(data, (bytes, bytearray, memoryview)):
                if len(data) == 0:
                    raise InputImageError("the image is empty (0 bytes); send an image file")
                return Image.open(io.BytesIO(bytes(data)))
            return Image.open(Path(data))
    except InputImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Pillow's own bomb guard fired before our size check could: quote our limit
        raise ImageTooLargeError(f"the {what} declares far more pixels than the limit of "
                                 f"{max_pixels}; downscale or crop it") from exc
    except FileNotFoundError as exc:
        raise InputImageError(f"no such file: {data}") from exc
    except IsADirectoryError as exc:
        raise InputImageError(f"{data} is a directory, not an image") from exc
    except UnidentifiedImageError as exc:
        raise InputImageError("not a recognised image (PNG, JPEG, WebP, BMP, TIFF...); "
                              "the file is corrupt or of another type") from exc
    except OSError as exc:
        raise InputImageError(f"cannot read the image ({exc}): the file is truncated or "
                              "corrupt; send the complete file") from exc


def _check_size(width: int, height: int, max_pixels: int, min_side: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(f"the {what} is {width}x{height} = {width * height} pixels, "
                                 f"over the limit of {max_pixels}; downscale or crop it")
    if min(width, height) < min_side:
        raise InputImageError(f"the {what} is {width}x{height}; both sides must be at least "
                              f"{min_side} pixels")


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"16-bit grayscale ({mode}) converted to 8-bit RGB")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        notes.append("floating-point grayscale converted to 8-bit RGB")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("alpha channel composited over white")
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode in ("L", "1"):
        notes.append("grayscale converted to RGB")
    elif mode not in ("RGB", "P"):
        notes.append(f"{mode} converted to RGB")
    return np.asarray(im.convert("RGB"))


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_side: int = MIN_SIDE, what: str = "image",
                 check: Optional[Callable[[int, int], None]] = None) -> DecodedImage:
    """Decode bytes or a file into an HxWx3 uint8 RGB array, honouring EXIF rotation.

    ``check(width, height)``: called with the size read from the header, before any
    pixel is decoded (the service prices the request there); it may raise."""
    im = _open(data, max_pixels, what)
    with im:
        _check_size(im.width, im.height, max_pixels, min_side, what)
        notes: list[str] = []
        fmt = (im.format or "").lower()
        if check is not None:
            # the stored size: EXIF rotation may swap the sides, which no price depends
            # on (and reading EXIF can decode a PNG)
            check(im.width, im.height)
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"first of {frames} frames used (animated or multi-page image)")
        # Pillow reads 16-bit RGB as 8-bit RGB; only the raw mode says so
        if im.mode == "RGB" and any(";16" in str(tile[3]) for tile in (im.tile or [])
                                    if len(tile) > 3):
            notes.append("16-bit RGB reduced to 8 bits per channel")
        try:
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            if orientation not in (1, None):
                im = ImageOps.exif_transpose(im)
                notes.append(f"rotated by its EXIF orientation ({orientation})")
            pixels = _to_rgb(im, notes)
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputImageError(f"the {what} is truncated or corrupt ({exc}); "
                                  "send the complete file") from exc
    return DecodedImage(np.ascontiguousarray(pixels, dtype=np.uint8), notes, fmt)


def decode_mask(data: bytes | str | Path, size: tuple[int, int],
                max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask image (white = fill) as an HxW bool array; must be ``size`` = (W, H)."""
    decoded = decode_image(data, max_pixels=max_pixels, min_side=1, what="mask")
    h, w = decoded.pixels.shape[:2]
    if (w, h) != tuple(size):
        raise InputImageError(f"the mask is {w}x{h} but the image is {size[0]}x{size[1]}; "
                              "send a mask of the same size as the image")
    return decoded.pixels.astype(np.float32).mean(axis=2) >= 127.5


def format_for_path(path: str | Path) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in OUTPUT_FORMATS:
        raise InputImageError(f"cannot write {ext or 'extensionless'} files; "
                              f"use one of: {', '.join(sorted(OUTPUT_FORMATS))}")
    return ext


def encode_image(pixels: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode an HxWx3 uint8 array as png / jpeg / webp bytes."""
    fmt = fmt.lower()
    if fmt not in OUTPUT_FORMATS:
        raise InputImageError(f"unknown output format {fmt!r}; use png, jpeg or webp")
    buf = io.BytesIO()
    kwargs = {"quality": quality} if OUTPUT_FORMATS[fmt] in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels).save(buf, format=OUTPUT_FORMATS[fmt], **kwargs)
    return buf.getvalue()


def save_image(pixels: np.ndarray, path: str | Path) -> None:
    path = Path(path)
    data = encode_image(pixels, format_for_path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
