"""The in-process scheduler (``RESSHIFT_ROLE=all``, and the worker role's engine).

``LocalScheduler`` admits like every HTTP-facing scheduler (``service.scheduler.
Admission``: 429 past ``RESSHIFT_QUEUE_SIZE``) and hands each item to the least-loaded
worker thread (``service.worker``, one per device); the item's future resolves to the
restored HxWx3 uint8 array or to a typed error. Workers are created in ``start``, which
imports the worker module only then: it is the one that brings in torch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from .errors import NotReady
from .metrics import Metrics
from .scheduler import Admission
from .settings import Settings
from .validation import ServedModel
from .work_item import WorkItem

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger("resshift.service")


class LocalScheduler(Admission):
    """Owns the worker threads; admits, dispatches and cancels work items."""

    def __init__(self, settings: Settings, metrics: Metrics):
        super().__init__(settings, metrics)
        self.workers: list["Worker"] = []

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

    @property
    def served(self) -> dict[str, ServedModel]:
        if not self.ready:
            raise NotReady(self.readiness()[1])
        return self.workers[0].served

    # -- work ------------------------------------------------------------------------------
    def _dispatch(self, item: WorkItem, idempotency_key: Optional[str]) -> None:
        """Hand an admitted item to the least-loaded worker thread (in one process there
        is no stored result an idempotency key could name)."""
        worker = min(self.workers, key=lambda w: w.load)
        item.on_cancel = worker.wake
        worker.submit(item)
