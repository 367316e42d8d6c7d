"""The HTTP side's handle on the workers: admission, dispatch, cancellation, shutdown.

Handlers hand a ``ValidatedRequest`` to ``Scheduler.submit`` and get a ``WorkItem``
whose ``future`` (a ``concurrent.futures.Future``, safe across threads) resolves to the
restored HxWx3 uint8 array or to a typed error. Admission is bounded: past
``RESSHIFT_QUEUE_SIZE`` admitted-and-unfinished requests, ``QueueFull`` (429) at once.
Workers (one thread per device) are created in ``start``; this module never imports
torch, so importing the service stays cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional

from .errors import NotReady, QueueFull, ServiceError, ShuttingDown
from .metrics import Metrics
from .schemas import JobState
from .settings import Settings
from .validation import ServedModel, ValidatedRequest
from .work_item import WorkItem

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger("resshift.service")


class Scheduler:
    """Owns the workers; admits, dispatches and cancels work items."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.workers: list["Worker"] = []
        self.closing = False
        self._lock = threading.Lock()
        self._inflight = 0
        self._service_s = 1.0          # moving average of a request's time in the system

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start one worker thread per device; each loads the models, warms up, serves."""
        from .worker import Worker      # the worker side is the only torch importer
        self.workers = [Worker(device, self.settings, self.metrics, index=i)
                        for i, device in enumerate(self.settings.devices)]
        for worker in self.workers:
            worker.start()

    def close(self, grace_s: Optional[float] = None) -> None:
        """Stop taking work; let in-flight items finish within ``grace_s``, fail the rest."""
        self.closing = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        for worker in self.workers:
            worker.stop(grace)
        for worker in self.workers:
            worker.join(timeout=grace + 30.0)
            if worker.is_alive():
                log.error("worker %s did not stop in time", worker.name)

    # -- state ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.workers) and all(w.state == "ready" for w in self.workers)

    def readiness(self) -> tuple[bool, str]:
        """(ready, a line for /readyz)."""
        if self.closing:
            return False, "shutting down"
        if not self.workers:
            return False, "workers not started"
        for w in self.workers:
            if w.state == "failed":
                return False, f"worker {w.device} failed: {w.error}"
            if w.state == "poisoned":
                return False, (f"device {w.device} is unusable ({w.error}); restart the "
                               "process")
            if not w.is_alive():
                return False, f"worker {w.device} is not running"
            if w.state != "ready":
                return False, f"worker {w.device}: {w.state}"
        return True, f"{len(self.workers)} worker(s) ready"

    def unavailable(self) -> Optional[ServiceError]:
        """The error new work gets now (503), or None when ready."""
        ready, detail = self.readiness()
        return None if ready else NotReady(f"not ready: {detail}; retry shortly")

    @property
    def served(self) -> dict[str, ServedModel]:
        if not self.ready:
            raise NotReady(self.readiness()[1])
        return self.workers[0].served

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- work ------------------------------------------------------------------------------
    def submit(self, request: ValidatedRequest, timeout_s: float,
               idempotency_key: Optional[str] = None) -> WorkItem:
        """Admit a request (or raise QueueFull / NotReady / ShuttingDown at once).

        ``idempotency_key`` matters only with Redis (``service.remote``): in one process
        there is no stored result to return."""
        if self.closing:
            raise ShuttingDown("the server is shutting down and takes no new work; retry "
                               "on another instance")
        if not self.ready:
            raise NotReady(f"not ready yet ({self.readiness()[1]}); retry shortly")
        with self._lock:
            if self._inflight >= self.settings.queue_size:
                raise QueueFull(f"the queue is full ({self._inflight} requests in flight); "
                                "retry after the time in Retry-After",
                                retry_after_s=self._service_s)
            self._inflight += 1
            self.metrics.inflight.set(self._inflight)
        item = WorkItem(request, timeout_s)
        item.future.add_done_callback(lambda _f, it=item: self._on_done(it))
        try:
            self._dispatch(item, idempotency_key)
        except BaseException as exc:
            item.fail(exc)          # releases the admission slot
            raise
        return item

    def _dispatch(self, item: WorkItem, idempotency_key: Optional[str]) -> None:
        """Hand an admitted item to the least-loaded worker thread."""
        worker = min(self.workers, key=lambda w: w.load)
        item.on_cancel = worker.wake
        worker.submit(item)

    def _on_done(self, item: WorkItem) -> None:
        elapsed = (item.finished_at or time.monotonic()) - item.admitted
        with self._lock:
            self._inflight -= 1
            self.metrics.inflight.set(self._inflight)
            if item.state is JobState.succeeded:
                self._service_s = 0.8 * self._service_s + 0.2 * elapsed
        if item.state is JobState.succeeded:
            self.metrics.request_duration.labels(item.request.task).observe(elapsed)
