"""The worker role: the embedded worker threads, fed from Redis instead of HTTP.

``WorkerScheduler`` runs a ``LocalScheduler`` (one worker thread per device, the same
batching across requests) and a ``StreamPump`` thread that claims jobs from the Redis
Stream through the consumer group and submits them to it, as many at once as
``RESSHIFT_WORKER_PREFETCH`` allows, so tiles of different jobs share UNet batches just
as tiles of different HTTP requests do in one process.

When a job's work item resolves, the pump encodes the image in the requested format and
``complete``s the entry, or ends it according to its error:

===================================  ==============================================
error                                what the entry gets
===================================  ==============================================
bad input (4xx: the model layer      ``fail(retry=False)``: no retry can fix it; the
refused the image, unknown task)     caller gets the same 4xx
deadline passed, canceled            ``fail(retry=False)``: nobody waits any more
unexpected (500)                     ``fail(retry=True)``: queued again until
                                     ``RESSHIFT_MAX_ATTEMPTS``, then dead-lettered
this worker shutting down            ``release``: queued again at once, no attempt
                                     counted
===================================  ==============================================

A worker that dies without any of this (SIGKILL, OOM, lost node) leaves its entries in
the group's pending list, where another worker's ``claim`` takes them over once they
have been idle for ``RESSHIFT_VISIBILITY_TIMEOUT_S``. So that a long job of a live
worker is never taken over, the pump renews its entries' idle time every quarter of
that timeout. Every ``BEAT_S`` it also announces itself and its models (the API learns
the served models from this) and drops jobs whose callers gave up.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import threading
import time
from typing import Optional

from .errors import Canceled, DeadlineExceeded, NotReady, QueueFull, ShuttingDown, \
    ServiceError, status_and_code
from .local import LocalScheduler
from .metrics import Metrics
from .redis_queue import Entry, QueueUnavailable, RedisQueue
from .scheduler import Scheduler, not_ready_error
from .settings import Settings
from .validation import ServedModel, ValidatedRequest
from .wire import error_meta, from_job, served_to_json
from .work_item import WorkItem

log = logging.getLogger("resshift.worker")

BEAT_S = 1.0
SETTLE_RETRIES = (0.25, 0.5, 1.0, 2.0, None)   # pauses between tries of a final write
PRUNE_IDLE_S = 3600.0       # a consumer idle this long with nothing pending is forgotten


def consumer_name(settings: Settings) -> str:
    return settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"


class StreamPump(threading.Thread):
    """Claims jobs from Redis into a ``LocalScheduler`` and stores their outcomes.

    The thread runs until ``drain``: it claims only while the scheduler is ready and
    not closing, but keeps beating (renewing held jobs, honouring cancels) through the
    shutdown grace, so a job finishing during the grace is not taken over meanwhile.
    Nothing that goes wrong in one iteration (a Redis error, a bad record) ends it.
    """

    def __init__(self, scheduler: LocalScheduler, queue: RedisQueue, settings: Settings):
        super().__init__(name="resshift-stream-pump", daemon=True)
        self.scheduler = scheduler
        self.queue = queue
        self.settings = settings
        self.consumer = consumer_name(settings)
        self.redis_error: Optional[str] = None
        self.announced = False                  # ready only once the API can see us
        self._active: dict[str, tuple[Entry, WorkItem]] = {}    # by entry id
        self._cond = threading.Condition()
        self._claiming = True
        self._done = threading.Event()
        self._last_renew = 0.0
        self._next_prune = 0.0
        self._finishers = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="resshift-finish")

    # -- control --------------------------------------------------------------------------
    def stop_claiming(self) -> None:
        with self._cond:
            self._claiming = False
            self._cond.notify_all()

    def drain(self, timeout_s: float) -> None:
        """After the scheduler closed: store the outcomes, give back what never resolved,
        leave the group."""
        self._finishers.shutdown(wait=True)
        self._done.set()
        with self._cond:
            self._cond.notify_all()
        self.join(timeout=timeout_s)
        with self._cond:
            leftover = list(self._active.values())
        for entry, _item in leftover:
            self._settle(self.queue.release, entry, "a worker shut down")
        try:
            self.queue.retire(self.consumer)
        except QueueUnavailable:
            pass

    @property
    def held(self) -> int:
        with self._cond:
            return len(self._active)

    def _may_claim(self) -> bool:
        return self._claiming and self.scheduler.ready and not self.scheduler.closing

    # -- thread body ------------------------------------------------------------------------
    def run(self) -> None:
        log.info("worker %s will take jobs from Redis once ready (prefetch %d)",
                 self.consumer, self.settings.prefetch)
        next_beat = 0.0
        while not self._done.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + BEAT_S
                try:
                    self._beat(now)
                except Exception:
                    log.exception("worker heartbeat failed; trying again")
            with self._cond:
                free = self.settings.prefetch - len(self._active)
                if free <= 0 or not self._may_claim():
                    self._cond.wait(timeout=max(0.01, min(0.2, next_beat - now)))
                    continue
            try:
                self._claim(free)
            except Exception:
                log.exception("taking jobs from Redis failed; trying again")
                self._done.wait(0.5)

    def _claim(self, free: int) -> None:
        try:
            entries = self.queue.claim(self.consumer, count=free, block_ms=int(BEAT_S * 1000))
        except QueueUnavailable as exc:
            self._down(exc)
            self._done.wait(0.5)
            return
        self._up()
        try:
            canceled = self.queue.canceled([e.job_id for e in entries])
        except QueueUnavailable:
            canceled = set()                    # the next beat looks again
        try:
            self.queue.mark_started([e.job_id for e in entries if e.job_id not in canceled])
        except QueueUnavailable:
            pass                                # only the "running" state waits for it
        for entry in entries:
            try:
                self._start(entry, entry.job_id in canceled)
            except Exception as exc:            # this entry only; the others go on
                log.exception("starting job %s failed", entry.job_id)
                self._settle(self.queue.fail, entry, f"{type(exc).__name__}: {exc}",
                             retry=True)

    def _beat(self, now: float) -> None:
        """Announce (while taking jobs), renew held entries, drop canceled jobs."""
        try:
            if self._may_claim():
                self.queue.announce(self.consumer, {
                    "models": served_to_json(self.scheduler.served),
                    "devices": list(self.settings.devices),
                    "prefetch": self.settings.prefetch, "held": self.held})
                self.announced = True
            with self._cond:
                held = list(self._active.values())
            if held and now - self._last_renew >= self.settings.visibility_timeout_s / 4:
                self.queue.renew(self.consumer, [e for e, _ in held])
                self._last_renew = now
            gone = self.queue.canceled([e.job_id for e, _ in held])
            if now >= self._next_prune:          # consumers of workers long gone
                self.queue.prune_consumers(
                    max(PRUNE_IDLE_S, 5 * self.settings.visibility_timeout_s))
                self._next_prune = now + 60.0
        except QueueUnavailable as exc:
            self._down(exc)
            return
        except NotReady:                       # workers stopped under us: nothing to say
            return
        self._up()
        for entry, item in held:
            if entry.job_id in gone:
                item.cancel(Canceled("the caller gave up on this job (deadline or DELETE)"))

    def _up(self) -> None:
        if self.redis_error is not None:
            log.info("Redis is reachable again; taking jobs")
        self.redis_error = None

    def _down(self, exc: Exception) -> None:
        if self.redis_error is None:
            log.warning("Redis unavailable, not taking jobs: %s", exc)
        self.redis_error = str(exc)

    # -- one job ------------------------------------------------------------------------------
    def _start(self, entry: Entry, canceled: bool) -> None:
        try:
            req = from_job(entry.payload, entry.blobs, self.scheduler.served)
            # on Redis's clock (hosts' clocks may disagree); a job queued without one
            # gets the asynchronous jobs' deadline
            left = entry.left_s if entry.left_s is not None else self.settings.job_timeout_s
        except (NotReady, ShuttingDown) as exc:    # this worker, not the job: give it back
            self._settle(self.queue.release, entry, str(exc))
            return
        except ServiceError as exc:
            self._settle(self.queue.fail, entry, str(exc), retry=False, meta=error_meta(exc))
            return
        except (KeyError, ValueError, TypeError) as exc:
            self._settle(self.queue.fail, entry, f"unreadable job: {exc}", retry=False)
            return
        if canceled or left <= 0:
            why = (Canceled("the caller gave up on this job before a worker took it")
                   if canceled else DeadlineExceeded("the job's deadline passed before a "
                                                     "worker took it"))
            self._settle(self.queue.fail, entry, str(why), retry=False, meta=error_meta(why))
            return
        try:
            item = self.scheduler.submit(req, timeout_s=left)
        except (ShuttingDown, NotReady, QueueFull) as exc:
            self._settle(self.queue.release, entry, str(exc))
            return
        with self._cond:
            self._active[entry.entry_id] = (entry, item)
        item.future.add_done_callback(lambda _f, e=entry, it=item: self._on_done(e, it))

    def _on_done(self, entry: Entry, item: WorkItem) -> None:
        try:
            self._finishers.submit(self._finish, entry, item)
        except RuntimeError:                    # shutting down: finish in this thread
            self._finish(entry, item)

    def _finish(self, entry: Entry, item: WorkItem) -> None:
        try:
            exc = item.future.exception()
            meta = {"timings": dict(item.timings), "worker": self.consumer,
                    "attempt": entry.attempt, "seed": item.request.seed,
                    "format": item.request.output_format}
            if exc is None:
                from model.imageio import encode_image
                data = encode_image(item.future.result(), item.request.output_format)
                self._settle(self.queue.complete, entry, data, meta=meta)
            elif isinstance(exc, ShuttingDown) and self.scheduler.closing:
                self._settle(self.queue.release, entry, "a worker shut down")
            elif isinstance(exc, ShuttingDown):
                # a device thread died under the job (it may be what killed it): count
                # an attempt, so a job that keeps doing this ends in the dead letters
                self._settle(self.queue.fail, entry, f"the worker's device thread stopped: "
                             f"{exc}", retry=True)
            else:
                status, _ = status_and_code(exc)
                retry = status >= 500 and status not in (503, 504)
                self._settle(self.queue.fail, entry, str(exc), retry=retry,
                             meta={**meta, **error_meta(exc)})
        except Exception as exc:               # the encoder: unexpected, worth a retry
            log.exception("finishing job %s failed", entry.job_id)
            self._settle(self.queue.fail, entry, f"{type(exc).__name__}: {exc}", retry=True)
        finally:
            with self._cond:
                self._active.pop(entry.entry_id, None)
                self._cond.notify_all()

    def _settle(self, op, entry: Entry, *args, **kwargs) -> None:
        """One Redis call that ends an entry, tried for a few seconds through a Redis
        blip; after that the entry stays pending and is taken over after the visibility
        timeout (or was lost with Redis)."""
        for pause in SETTLE_RETRIES:
            try:
                op(entry, *args, **kwargs)
                return
            except QueueUnavailable as exc:
                if pause is None:
                    log.warning("could not store the outcome of job %s: %s", entry.job_id,
                                exc)
                    return
                time.sleep(pause)
            except Exception:
                log.exception("storing the outcome of job %s failed", entry.job_id)
                return


class WorkerScheduler(Scheduler):
    """Scheduler of the worker role: a ``LocalScheduler`` and the pump feeding it
    (module doc). Readiness adds the pump's state to the worker threads'; everything
    else is the local scheduler's, which the pump submits each claimed job to."""

    def __init__(self, settings: Settings, metrics: Metrics, queue: RedisQueue):
        self.queue = queue
        self.local = LocalScheduler(settings, metrics)
        self.pump = StreamPump(self.local, queue, settings)

    def start(self) -> None:
        self.local.start()
        self.pump.start()

    def close(self, grace_s: Optional[float] = None) -> None:
        self.pump.stop_claiming()
        self.local.close(grace_s)
        self.pump.drain(timeout_s=10.0)

    def readiness(self) -> tuple[bool, str]:
        ready, detail = self.local.readiness()
        if ready and not self.pump.is_alive():
            return False, "the thread taking jobs from Redis stopped (see the log)"
        if ready and self.pump.redis_error is not None:
            return False, f"Redis unavailable ({self.pump.redis_error}); not taking jobs"
        if ready and not self.pump.announced:
            return False, "models loaded; announcing this worker in Redis"
        if ready:
            detail += f"; taking jobs from Redis as {self.pump.consumer}"
        return ready, detail

    def unavailable(self) -> Optional[ServiceError]:
        return not_ready_error(self.readiness())

    @property
    def ready(self) -> bool:
        return self.local.ready

    @property
    def served(self) -> dict[str, ServedModel]:
        return self.local.served

    @property
    def inflight(self) -> int:
        return self.local.inflight

    def submit(self, request: ValidatedRequest, timeout_s: float,
               idempotency_key: Optional[str] = None) -> WorkItem:
        """Run a request on this process's devices (what the pump does per job)."""
        return self.local.submit(request, timeout_s, idempotency_key)
