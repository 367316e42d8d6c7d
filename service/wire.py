"""A validated request as a Redis job and back; a job's error as a result and back.

Pure functions, no Redis and no torch: the API role turns a ``ValidatedRequest`` into a
JSON payload plus binary blobs (``to_job``), the worker role rebuilds the request from
them (``from_job``). The decoded pixels travel, not the upload: the API has already
decoded, EXIF-rotated and converted the image, so a worker never repeats that work or
its error handling, and the job is exactly what validation approved.

Errors cross the same way: a worker stores the HTTP status and code of a typed error in
the result's meta (``error_meta``) and the API raises a ``RemoteError`` with them, so a
client sees the status the embedded mode would have given.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Mapping

import numpy as np

from .errors import RemoteError, status_and_code
from .validation import ServedModel, ValidatedRequest

WIRE_VERSION = 1


def to_job(req: ValidatedRequest) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(payload, blobs) of a request. Blobs are raw bytes: pixels HxWx3 uint8 in C
    order, the mask bit-packed. The deadline is not here: the queue stamps it on
    Redis's clock (``RedisQueue.submit(budget_s=...)``)."""
    payload = {
        "v": WIRE_VERSION, "task": req.task, "seed": req.seed,
        "format": req.output_format, "shape": list(req.pixels.shape),
        "mask": req.mask is not None, "notes": list(req.notes), "model": req.model.name,
    }
    blobs = {"pixels": np.ascontiguousarray(req.pixels, dtype=np.uint8).tobytes()}
    if req.mask is not None:
        blobs["mask"] = np.packbits(req.mask.astype(bool), axis=None).tobytes()
    return payload, blobs


def from_job(payload: Mapping[str, Any], blobs: Mapping[str, bytes],
             served: Mapping[str, ServedModel]) -> ValidatedRequest:
    """The request a job carries, checked against what this worker serves.

    Raises ``RemoteError`` (422, ``unknown_task``) for a task this worker does not serve,
    and ``ValueError`` for a payload this version cannot read.
    """
    if payload.get("v") != WIRE_VERSION:
        raise ValueError(f"job format version {payload.get('v')!r}; this worker reads "
                         f"version {WIRE_VERSION} (API and workers run different releases)")
    task = payload["task"]
    if task not in served:
        raise RemoteError(f"task {task!r} is not served by the worker that took this job "
                          f"(it serves {', '.join(sorted(served))}); every worker of a "
                          "deployment must serve the same RESSHIFT_MODELS",
                          status=422, code="unknown_task")
    h, w, c = (int(x) for x in payload["shape"])
    pixels = np.frombuffer(blobs["pixels"], np.uint8)
    if pixels.size != h * w * c:
        raise ValueError(f"pixel blob has {pixels.size} bytes for shape {h}x{w}x{c}")
    mask = None
    if payload.get("mask"):
        bits = np.unpackbits(np.frombuffer(blobs["mask"], np.uint8), count=h * w)
        mask = bits.reshape(h, w).astype(bool)
    return ValidatedRequest(task=task, pixels=pixels.reshape(h, w, c).copy(), mask=mask,
                            seed=int(payload["seed"]), output_format=payload["format"],
                            model=served[task], notes=tuple(payload.get("notes", ())))


def error_meta(exc: BaseException) -> dict[str, Any]:
    status, code = status_and_code(exc)
    return {"status": status, "code": code}


def error_from_result(message: str, meta: Mapping[str, Any]) -> RemoteError:
    return RemoteError(message, status=int(meta.get("status", 500)),
                       code=str(meta.get("code", "inference_failed")))


def served_to_json(served: Mapping[str, ServedModel]) -> dict[str, dict[str, Any]]:
    return {task: asdict(m) for task, m in served.items()}


def served_from_json(data: Mapping[str, Mapping[str, Any]]) -> dict[str, ServedModel]:
    """Fields this release does not know (a newer worker during a rolling upgrade) are
    ignored."""
    known = {f.name for f in fields(ServedModel)}
    return {task: ServedModel(**{k: v for k, v in dict(m).items() if k in known})
            for task, m in data.items()}
