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

from model.geometry import WorkShape
from model.imageio import decode_image, decode_mask

from .errors import (FaceInputSize, InvalidField, MalformedRequest, MaskNotSupported,
                     MaskRequired, MaskSizeMismatch, TooMuchWork, UnknownTask, clip)
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
    # what admission prices a request with (``estimate_seconds``): how the model cuts an
    # image into network calls (``model.geometry.WorkShape`` as a dict) and the rates
    # the worker measured, seconds per canvas pixel through the network and seconds per
    # output pixel of encoding and decoding (0: not measured yet, nothing is refused)
    work: Optional[dict] = None
    net_rate: float = 0.0
    io_rate: float = 0.0


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


_SEED = re.compile(r"[0-9]{1,19}")


def parse_seed(value: Optional[str | int]) -> Optional[int]:
    """A form's seed: ASCII digits only (no sign, spaces or other scripts' digits)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or
                                       _SEED.fullmatch(str(value))):
        raise InvalidField(f"seed must be an integer written in ASCII digits 0-9, got "
                           f"{clip(repr(value) if isinstance(value, str) else str(value))}")
    seed = int(value)
    if not 0 <= seed <= MAX_SEED:
        raise InvalidField(f"seed must be in [0, 2^63-1], got {clip(str(seed))}")
    return seed


def resolve_task(task: Optional[str], served: Mapping[str, ServedModel]) -> ServedModel:
    if task is None or task == "":
        if len(served) == 1:
            return next(iter(served.values()))
        raise UnknownTask(f"say which task: one of {', '.join(sorted(served))}",
                          code="task_required")
    if task not in served:
        raise UnknownTask(f"unknown task {clip(task, 40)!r}; this server does "
                          f"{', '.join(sorted(served))}")
    return served[task]


def estimate_seconds(model: ServedModel, height: int, width: int) -> Optional[float]:
    """Device time a request of this size needs on this deployment, from the measured
    rates (None until the worker measured them)."""
    if model.work is None or model.net_rate <= 0:
        return None
    shape = WorkShape(**model.work)
    return (shape.net_pixels(height, width) * model.net_rate
            + shape.out_pixels(height, width) * model.io_rate)


def admit_size(model: ServedModel, height: int, width: int, deadline_s: Optional[float],
               jobs_deadline_s: Optional[float] = None) -> None:
    """Refuse at once (413) work that cannot finish within its deadline."""
    if deadline_s is None:
        return
    estimate = estimate_seconds(model, height, width)
    if estimate is None or estimate <= deadline_s:
        return
    hint = "send a smaller image"
    if jobs_deadline_s and estimate <= jobs_deadline_s:
        hint = (f"send a smaller image, or use the asynchronous jobs API (POST /v1/jobs), "
                f"whose deadline is {jobs_deadline_s:.0f} s")
    raise TooMuchWork(f"a {width}x{height} image needs about {estimate:.0f} s of device time "
                      f"on this server ({model.task}: measured rates), more than the "
                      f"{deadline_s:.0f} s deadline of this request; {hint}")


def validate(raw: RawRestore, served: Mapping[str, ServedModel],
             settings: Settings, deadline_s: Optional[float] = None) -> ValidatedRequest:
    """Check every rule, decode the image (and mask); raise the first rule broken.

    ``deadline_s``: the request's deadline; work estimated to take longer is refused
    from the image header, before the pixels are decoded (None: not checked)."""
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
    jobs_deadline = settings.job_timeout_s if deadline_s != settings.job_timeout_s else None
    decoded = decode_image(raw.image, max_pixels=settings.max_pixels,
                           min_side=settings.min_side,
                           check=lambda w, h: admit_size(target, h, w, deadline_s,
                                                         jobs_deadline))
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
