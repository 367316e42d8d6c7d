"""What the restore and jobs handlers share: validate-and-submit, result headers."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Optional

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..deps import Services, require_ready
from ..errors import Canceled, DeadlineExceeded, InvalidField, status_and_code
from ..parsing import read_restore
from ..work_item import WorkItem
from ..validation import ValidatedRequest, validate

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


SUBMISSIONS = ("/v1/restore", "/v1/jobs")


def count_refused(svc: Services, path: str, method: str, status: int) -> None:
    """Count a submission refused before its handler ran (401, 413 body_too_large...):
    every answer to a submission is in resshift_requests_total."""
    if method == "POST" and path in SUBMISSIONS:
        svc.metrics.requests.labels("unknown", str(status)).inc()


class Counted:
    """Counts one restoration request in resshift_requests_total{task,status} on exit.

    The task label is the requested task when it is served, else "unknown", so random
    client input cannot create label values.
    """

    def __init__(self, svc: Services, request: Optional[Request] = None):
        self.svc = svc
        self.task = "unknown"
        self.status = 500
        if request is not None:       # the app's error handler counts what we did not
            request.state.counted = True

    def note_task(self, task: Optional[str]) -> None:
        if self.svc.scheduler.ready:
            served = self.svc.scheduler.served
            if task in served:
                self.task = task
            elif not task and len(served) == 1:
                self.task = next(iter(served))

    def __enter__(self) -> "Counted":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.status = status_and_code(exc)[0]
        self.svc.metrics.requests.labels(self.task, str(self.status)).inc()


async def submit(svc: Services, request: Request, req: ValidatedRequest,
                 timeout_s: float) -> WorkItem:
    """Admit and dispatch in a thread: with Redis, dispatching hashes the pixels and
    talks to Redis, which must not stall the event loop (and /healthz with it)."""
    key = idempotency_key(request)
    return await run_in_threadpool(svc.scheduler.submit, req, timeout_s,
                                   idempotency_key=key)


async def validate_request(request: Request, svc: Services, counted: Counted,
                           deadline_s: float) -> ValidatedRequest:
    """Parse and validate (decoding in a thread); the scheduler must be ready. Work that
    cannot finish within ``deadline_s`` is refused from the image header (413)."""
    require_ready(svc)
    raw = await read_restore(request)
    counted.note_task(raw.task)
    return await run_in_threadpool(validate, raw, svc.scheduler.served, svc.settings,
                                   deadline_s)


_IDEM_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key(request: Request) -> Optional[str]:
    """The ``Idempotency-Key`` header (1-255 visible ASCII characters), if sent. With
    Redis, a repeated key returns the first request's stored result."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not _IDEM_KEY.match(value):
        raise InvalidField("Idempotency-Key must be 1 to 255 visible ASCII characters "
                           "(e.g. a UUID)")
    # scoped by the caller's credentials: two clients' "order-1" are different keys
    scope = hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()
    return f"{scope[:32]}:{value}"


def remaining_s(request: Request, budget_s: float) -> float:
    arrived = request.scope.get("state", {}).get("arrived", time.monotonic())
    left = budget_s - (time.monotonic() - arrived)
    if left <= 0:
        raise DeadlineExceeded(f"the request used its {budget_s:.0f} s before it could be "
                               "queued (slow upload?)")
    return left


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def await_result(request: Request, svc: Services, item: WorkItem) -> np.ndarray:
    """The restored pixels; cancels the item on deadline (504) or disconnect (499)."""
    result = asyncio.wrap_future(item.future)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED,
                                     timeout=max(0.0, item.deadline - time.monotonic()) + 0.5)
    finally:
        gone.cancel()
    if result in done:
        return result.result()
    # Whatever the worker does later with this item, nobody reads it: keep it quiet.
    result.add_done_callback(lambda f: f.cancelled() or f.exception())
    if gone in done:
        item.cancel(Canceled("the client disconnected"))
        raise Canceled("the client disconnected; its tiles were dropped")
    error = DeadlineExceeded(f"no result within {svc.settings.request_timeout_s:.0f} s "
                             "(RESSHIFT_REQUEST_TIMEOUT_S); the request was dropped. Retry "
                             "later or use POST /v1/jobs for large images")
    item.cancel(error)
    raise error


def result_headers(item: WorkItem, req: ValidatedRequest) -> dict[str, str]:
    t = item.timings
    inference = t["encode"] + t["denoise"] + t["decode"]
    total = (item.finished_at or time.monotonic()) - item.admitted
    headers = {
        "X-Seed": str(req.seed),
        "X-Model": req.model.name,
        "X-Task": req.task,
        "X-Queue-Seconds": f"{t['queue']:.4f}",
        "X-Inference-Seconds": f"{inference:.4f}",
        "Server-Timing": ", ".join(
            [f"{stage};dur={t[stage] * 1000:.1f}" for stage in ("queue", "encode", "denoise",
                                                                 "decode")]
            + [f"total;dur={total * 1000:.1f}"]),
    }
    if item.replayed:
        headers["X-Idempotent-Replay"] = "true"
    if req.notes:
        headers["X-Input-Notes"] = "; ".join(req.notes).encode("ascii", "replace").decode()
    return headers
