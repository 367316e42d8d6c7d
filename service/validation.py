"""From request fields to a ``ValidatedRequest``, before anything is queued.

Every rule is its own typed error (``service.errors``) with a message that says what to
fix. Image decoding (EXIF rotation, alpha, 16-bit, CMYK, bombs, truncation) is the model
layer's ``model.imageio``; this module adds the service's rules: known task, mask
presence and size, the face task's input size, seeds and formats. CPU work (decoding)
happens here, so callers run ``validate`` in a thread.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from model.imageio import decode_image, decode_mask

from .errors import (FaceInputSize, InvalidField, MalformedRequest, MaskNotSupported,
                     MaskRequired, MaskSizeMismatch, UnknownTask)
from .schemas import MAX_SEED
from .settings import Settings

OUTPUT_FORMATS = ("png", "jpeg", "webp")
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ServedModel:
    """What the HTTP side knows of a loaded model (plain data, no tensors)."""

    task: str              # the name clients use (key of RESSHIFT_MODELS)
    name: str              # the model's own name (X-Model)
    family: str
    kind: str              # the model config's task: sr, inpaint, face, restore
    scale: int
    steps: int
    needs_mask: bool
    latent_tile: Optional[int]
    input_multiple: int
    backend: str = "torch"
    precision: str = "float32"
    version: str = ""      # weights + backend + precision; part of the idempotency key


@dataclass(frozen=True)
class RawRestore:
    """Request fields as received (multipart or JSON), bytes already base64-decoded."""

    image: bytes
    task: Optional[str] = None
    mask: Optional[bytes] = None
    seed: Optional[int] = None
    output_format: str = "png"


@dataclass(frozen=True)
class ValidatedRequest:
    """A request that passed every rule: what the worker needs, nothing more."""

    task: str
    pixels: np.ndarray                     # HxWx3 uint8 RGB
    mask: Optional[np.ndarray]             # HxW bool, True = fill
    seed: int
    output_format: str
    model: ServedModel
    notes: tuple[str, ...] = field(default=())


def b64decode(value: str, what: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, optional data: URL prefix)."""
    text = _DATA_URL.sub("", value.strip(), count=1)
    text = "".join(text.split())            # line breaks from encoders are fine
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequest(f"'{what}' is not valid base64 ({exc}); send the file's bytes "
                               "base64-encoded", code="bad_base64") from exc
    if not data:
        raise MalformedRequest(f"'{what}' is empty; send the file's bytes base64-encoded",
                               code="bad_base64")
    return data


def parse_seed(value: Optional[str | int]) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        seed = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidField(f"seed must be an integer, got {str(value)[:40]!r}") from exc
    if not 0 <= seed <= MAX_SEED:
        raise InvalidField(f"seed must be in [0, 2^63-1], got {seed}")
    return seed


def resolve_task(task: Optional[str], served: Mapping[str, ServedModel]) -> ServedModel:
    if task is None or task == "":
        if len(served) == 1:
            return next(iter(served.values()))
        raise UnknownTask(f"say which task: one of {', '.join(sorted(served))}",
                          code="task_required")
    if task not in served:
        raise UnknownTask(f"unknown task {task[:40]!r}; this server does "
                          f"{', '.join(sorted(served))}")
    return served[task]


def validate(raw: RawRestore, served: Mapping[str, ServedModel],
             settings: Settings) -> ValidatedRequest:
    """Check every rule, decode the image (and mask); raise the first rule broken."""
    target = resolve_task(raw.task, served)
    fmt = raw.output_format.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in OUTPUT_FORMATS:
        raise InvalidField(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, "
                           f"got {raw.output_format[:20]!r}")
    if target.needs_mask and raw.mask is None:
        raise MaskRequired(f"task {target.task!r} fills the white area of a mask: send "
                           "'mask' (an image of the same size, white = fill)")
    if not target.needs_mask and raw.mask is not None:
        raise MaskNotSupported(f"task {target.task!r} takes no mask; drop the 'mask' field "
                               "or pick an inpainting task")
    decoded = decode_image(raw.image, max_pixels=settings.max_pixels,
                           min_side=settings.min_side)
    h, w = decoded.pixels.shape[:2]
    if target.kind == "face" and (w, h) != (settings.face_size, settings.face_size):
        raise FaceInputSize(f"the face task takes aligned {settings.face_size}x"
                            f"{settings.face_size} face crops; this image is {w}x{h}. "
                            "Crop and resize the face first")
    mask = None
    if raw.mask is not None:
        header = decode_image(raw.mask, max_pixels=settings.max_pixels, min_side=1, what="mask")
        mh, mw = header.pixels.shape[:2]
        if (mw, mh) != (w, h):
            raise MaskSizeMismatch(f"the mask is {mw}x{mh} but the image is {w}x{h}; send a "
                                   "mask of the same size as the image")
        mask = decode_mask(raw.mask, (w, h), max_pixels=settings.max_pixels)
    # 31 bits: a random seed must survive JSON clients that hold numbers as doubles.
    seed = raw.seed if raw.seed is not None else secrets.randbelow(2 ** 31)
    return ValidatedRequest(task=target.task, pixels=decoded.pixels, mask=mask, seed=seed,
                            output_format=fmt, model=target, notes=tuple(decoded.notes))
