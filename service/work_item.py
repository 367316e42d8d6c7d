"""``WorkItem``: one admitted request, from admission to its result.

Every role uses it: the schedulers create it, worker threads resolve it, the jobs store
and the handlers await its ``future`` (a ``concurrent.futures.Future``, safe across
threads). The future resolves to the restored HxWx3 uint8 array when a worker thread in
this process made it, to the encoded image bytes when a worker process made it (Redis),
or to a typed error. It lives in a module of its own so that the schedulers and the
worker threads can both import it without importing each other.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from typing import Callable, Optional

import numpy as np

from .errors import Canceled, DeadlineExceeded, ServiceError
from .schemas import JobState
from .validation import ValidatedRequest

STAGES = ("queue", "encode", "denoise", "decode")


class WorkItem:
    """One admitted request on its way through a worker (sync or async alike)."""

    def __init__(self, request: ValidatedRequest, timeout_s: float):
        self.id = uuid.uuid4().hex
        self.request = request
        self.admitted = time.monotonic()
        self.deadline = self.admitted + timeout_s
        self.state = JobState.queued
        self.future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        self.timings = dict.fromkeys(STAGES, 0.0)     # seconds, written by the worker
        self.finished_at: Optional[float] = None
        self._abandon: Optional[ServiceError] = None
        # who must hear of a cancel: the worker thread holding it (wake it), or Redis
        self.on_cancel: Optional[Callable[[], None]] = None
        self.replayed = False          # remote mode: an idempotent duplicate's stored result
        self.idem_key: Optional[str] = None   # remote mode: the key it was queued under

    def abandon_reason(self, now: float) -> Optional[ServiceError]:
        """Why the worker should drop this item now (canceled, past deadline), or None."""
        if self._abandon is not None:
            return self._abandon
        if now >= self.deadline:
            return DeadlineExceeded("the request ran past its deadline "
                                    f"({self.deadline - self.admitted:.0f} s) and was dropped; "
                                    "retry later or send a smaller image")
        return None

    def release_result(self) -> None:
        """Forget the result pixels once their encoded bytes are kept elsewhere (a job's
        result lives as bytes for its TTL; the pixel array need not stay as well)."""
        if self.future.done() and self.future.exception() is None:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(None)
            self.future = done

    def cancel(self, error: ServiceError) -> None:
        if self._abandon is None:
            self._abandon = error
        if self.on_cancel is not None:
            self.on_cancel()

    # -- resolution (worker thread) -------------------------------------------------------
    def succeed(self, pixels: np.ndarray) -> None:
        self._resolve(JobState.succeeded, result=pixels)

    def fail(self, error: BaseException) -> None:
        state = JobState.canceled if isinstance(error, Canceled) else JobState.failed
        self._resolve(state, error=error)

    def _resolve(self, state: JobState, result=None, error: Optional[BaseException] = None):
        if self.future.done():
            return
        self.finished_at = time.monotonic()
        self.state = state
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)
