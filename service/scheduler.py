"""What the app needs from a scheduler, and the admission the HTTP-facing ones share.

``Scheduler`` is the interface ``create_app`` and the routers program against. The
app builds one implementation per ``RESSHIFT_ROLE`` (``service.app._scheduler``):

===========  =====================================  ====================================
role         implementation                         where admitted work goes
===========  =====================================  ====================================
``all``      ``service.local.LocalScheduler``       worker threads in this process
``api``      ``service.remote.RemoteScheduler``     the Redis Stream; a worker process
                                                    stores the result
``worker``   ``service.pump.WorkerScheduler``       worker threads in this process, fed
                                                    from the Redis Stream by a pump
===========  =====================================  ====================================

``LocalScheduler`` and ``RemoteScheduler`` admit HTTP work with the same rules
(``Admission``): past ``RESSHIFT_QUEUE_SIZE`` admitted-and-unfinished requests,
``QueueFull`` (429) at once. This module never imports torch, so importing the service
stays cheap.
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Optional

from .errors import NotReady, QueueFull, ServiceError, ShuttingDown
from .metrics import Metrics
from .schemas import JobState
from .settings import Settings
from .validation import ServedModel, ValidatedRequest
from .work_item import WorkItem


class Scheduler(abc.ABC):
    """The scheduler as the app, its dependencies and its routers use it.

    Life cycle (every role): ``start`` in the app's lifespan (workers load models in the
    background, or the Redis monitor starts), ``close`` at shutdown (stop admitting,
    give in-flight work ``grace_s``, default ``RESSHIFT_SHUTDOWN_GRACE_S``, fail or hand
    back the rest).

    State (every role): ``readiness`` for ``/readyz``; ``unavailable`` is the error new
    work gets now (503) or None; ``ready`` says whether work is admitted now; ``served``
    the models by task (``NotReady`` until known); ``inflight`` the admitted and
    unfinished items.

    Work: ``submit`` admits a request or raises ``QueueFull`` / ``NotReady`` /
    ``ShuttingDown`` at once, and returns a ``WorkItem`` whose future resolves to the
    HxWx3 uint8 pixels (``all``, ``worker``) or to the encoded image bytes (``api``: a
    worker process encoded them). ``idempotency_key`` only matters with Redis, where a
    repeated key joins the first request's job. The worker role mounts no work routes:
    only its pump submits, for each job it claims from Redis, and that work runs on
    this process's devices as it would in the ``all`` role. Jobs (``/v1/jobs``) are
    kept by ``service.jobs.JobStore``, and canceled through ``WorkItem.cancel``, not
    here.

    An abstract base rather than a ``typing.Protocol``: properties such as ``served``
    raise until the models are known, and a runtime protocol check would evaluate them;
    here a missing member fails at construction instead.
    """

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def close(self, grace_s: Optional[float] = None) -> None: ...

    @abc.abstractmethod
    def readiness(self) -> tuple[bool, str]: ...

    @abc.abstractmethod
    def unavailable(self) -> Optional[ServiceError]: ...

    @property
    @abc.abstractmethod
    def ready(self) -> bool: ...

    @property
    @abc.abstractmethod
    def served(self) -> dict[str, ServedModel]: ...

    @property
    @abc.abstractmethod
    def inflight(self) -> int: ...

    @abc.abstractmethod
    def submit(self, request: ValidatedRequest, timeout_s: float,
               idempotency_key: Optional[str] = None) -> WorkItem: ...


def not_ready_error(readiness: tuple[bool, str]) -> Optional[ServiceError]:
    """The 503 new work gets for a ``readiness()`` answer, or None when ready."""
    ready, detail = readiness
    return None if ready else NotReady(f"not ready: {detail}; retry shortly")


class Admission(Scheduler):
    """Base of the schedulers that admit HTTP work (``LocalScheduler``,
    ``RemoteScheduler``): the bounded count of admitted-and-unfinished items, the
    in-flight gauge, the request-duration histogram, the Retry-After estimate.
    Subclasses say how they start and stop, when they are ready, what they serve, and
    where an admitted item goes (``_dispatch``)."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.closing = False
        self._lock = threading.Lock()
        self._inflight = 0
        self._service_s = 1.0          # moving average of a request's time in the system

    @abc.abstractmethod
    def _dispatch(self, item: WorkItem, idempotency_key: Optional[str]) -> None:
        """Send an admitted item on its way; raising fails it and frees its slot."""

    # -- shared -------------------------------------------------------------------------------
    def unavailable(self) -> Optional[ServiceError]:
        return not_ready_error(self.readiness())

    @property
    def inflight(self) -> int:
        return self._inflight

    def submit(self, request: ValidatedRequest, timeout_s: float,
               idempotency_key: Optional[str] = None) -> WorkItem:
        """Admit a request (or raise QueueFull / NotReady / ShuttingDown at once)."""
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

    def _on_done(self, item: WorkItem) -> None:
        elapsed = (item.finished_at or time.monotonic()) - item.admitted
        with self._lock:
            self._inflight -= 1
            self.metrics.inflight.set(self._inflight)
            if item.state is JobState.succeeded:
                self._service_s = 0.8 * self._service_s + 0.2 * elapsed
        if item.state is JobState.succeeded:
            self.metrics.request_duration.labels(item.request.task).observe(elapsed)
