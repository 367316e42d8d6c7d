"""The API role's scheduler: admit like the embedded one, then hand the job to Redis.

``RemoteScheduler`` implements ``service.scheduler.Scheduler`` (the routers cannot tell
it from ``LocalScheduler``) with the same admission rules (``Admission``:
``RESSHIFT_QUEUE_SIZE`` per API process, 429 past it), but instead of a worker thread
its ``_dispatch`` puts the request on the Redis Stream (``service.redis_queue``) and a
waiter thread resolves the work item's future when a worker process stores the result.
The future then holds the encoded image bytes (workers encode, so the large output never
crosses Redis as raw pixels).

What the API knows of the models comes from the workers: each announces the models it
serves (``service.pump``); the API is ready when Redis answers and at least one worker
has announced. A last-known model list survives a Redis restart, so the API is ready
again as soon as Redis answers and a worker announces once more.

Failure handling, in terms a client sees:

* Redis down at submission: 503 ``queue_unavailable`` at once, ``/readyz`` says why.
* Redis down while waiting: the waiter keeps trying for ``OUTAGE_GRACE_S``; if Redis
  comes back and still has the job it keeps waiting, if Redis came back empty (a
  restart without persistence) 503 "lost", and if it stays down 503 after the grace.
* The deadline passes: 504, and the job is marked canceled so a worker drops it.
* A worker's typed error: the status it had there (``RemoteError``), e.g. 500 after the
  dead-letter stream took a job that kept failing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from .errors import NotReady, ServiceError, ShuttingDown
from .metrics import Metrics
from .redis_queue import QueueConfig, QueueUnavailable, RedisQueue, ResultTimeout, \
    idempotency_key
from .scheduler import Admission
from .schemas import JobState
from .settings import Settings
from .validation import ServedModel
from .wire import error_from_result, served_from_json, to_job
from .work_item import WorkItem

log = logging.getLogger("resshift.service")

OUTAGE_GRACE_S = 5.0        # how long a waiter rides out a Redis outage
REFRESH_S = 1.0             # Redis health and worker announcements are read this often
WORKER_SEEN_S = 15.0        # a worker not announced for this long counts as gone


def queue_config(settings: Settings) -> QueueConfig:
    """The one place settings become queue parameters (API and worker alike)."""
    return QueueConfig(prefix=settings.redis_prefix,
                       visibility_timeout_ms=int(settings.visibility_timeout_s * 1000),
                       max_attempts=settings.max_attempts,
                       result_ttl_s=settings.job_ttl_s,
                       blob_ttl_s=max(settings.job_ttl_s, settings.job_timeout_s))


def safe_url(url: str) -> str:
    """The Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class RemoteScheduler(Admission):
    """Scheduler of the API role (see the module doc)."""

    def __init__(self, settings: Settings, metrics: Metrics, queue: RedisQueue):
        super().__init__(settings, metrics)
        self.queue = queue
        self._served: dict[str, ServedModel] = {}
        self._workers: dict[str, dict] = {}
        self._redis_error: Optional[str] = "not checked yet"
        self._stop = threading.Event()
        self._waiting: set[WorkItem] = set()
        self._wait_lock = threading.Lock()
        self._waiters = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.queue_size, thread_name_prefix="resshift-wait")
        self._cancels = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="resshift-cancel")
        self._monitor = threading.Thread(target=self._watch, name="resshift-redis-monitor",
                                         daemon=True)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        self._refresh_safely()
        self._monitor.start()

    def close(self, grace_s: Optional[float] = None) -> None:
        """Stop admitting; give waiting requests ``grace_s`` to get their results, then
        answer the rest 503 (their jobs live on in Redis and finish there)."""
        self.closing = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        end = time.monotonic() + grace
        while self.inflight and time.monotonic() < end:
            time.sleep(0.05)
        self._stop.set()
        with self._wait_lock:
            left = list(self._waiting)
        for item in left:
            item.fail(ShuttingDown("this API process stopped before the result arrived; "
                                   "the job finishes in Redis: retry with the same "
                                   "Idempotency-Key to get it"))
        self._waiters.shutdown(wait=False, cancel_futures=True)
        self._cancels.shutdown(wait=False)
        self._monitor.join(timeout=2 * REFRESH_S)

    # -- state ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        if self.closing:
            return False, "shutting down"
        if self._redis_error is not None:
            return False, (f"Redis at {safe_url(self.settings.redis_url or '')} is "
                           f"unavailable ({self._redis_error}); new work gets 503 until it "
                           "returns")
        if not self._served:
            return False, ("no worker has announced itself in Redis yet: start `resshift "
                           "serve --role worker` with the same RESSHIFT_REDIS_URL and "
                           "RESSHIFT_REDIS_PREFIX")
        return True, (f"Redis reachable; {len(self._workers)} worker(s) alive; tasks "
                      f"{', '.join(sorted(self._served))}")

    def unavailable(self) -> Optional[ServiceError]:
        if self._redis_error is not None and not self.closing:
            return QueueUnavailable(self.readiness()[1])
        return super().unavailable()

    @property
    def served(self) -> dict[str, ServedModel]:
        ready, detail = self.readiness()
        if not ready:
            raise NotReady(detail)
        return self._served

    # -- Redis health and worker announcements ----------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._refresh_safely()

    def _refresh_safely(self) -> None:
        try:
            self._refresh()
        except Exception as exc:        # start-up and the monitor outlive any bad answer
            log.exception("reading worker announcements failed")
            self._redis_error = f"unexpected answer from Redis: {exc}"

    def _refresh(self) -> None:
        try:
            self.queue.ping()
            workers = self.queue.workers(max_age_s=WORKER_SEEN_S)
        except QueueUnavailable as exc:
            if self._redis_error is None:
                log.warning("Redis became unavailable: %s", exc)
            self._redis_error = str(exc)
            return
        if self._redis_error is not None and self._redis_error != "not checked yet":
            log.info("Redis is reachable again")
        self._redis_error = None
        self._workers = workers
        announced = {}
        for info in workers.values():
            announced.update(info.get("models", {}))
        if announced:
            served = served_from_json(announced)
            if served != self._served:
                self._served = served
                self.metrics.model_info.clear()
                for m in served.values():
                    self.metrics.model_info.labels(m.task, m.name, m.backend,
                                                   m.precision).set(1)

    # -- work --------------------------------------------------------------------------------
    def _dispatch(self, item: WorkItem, idempotency_key_header: Optional[str]) -> None:
        req = item.request
        payload, blobs = to_job(req)
        if idempotency_key_header:
            key = "key:" + hashlib.sha256(idempotency_key_header.encode()).hexdigest()
        else:
            params = {k: payload[k] for k in ("task", "format", "shape", "mask")}
            key = idempotency_key(blobs["pixels"], blobs.get("mask"), params, req.seed,
                                  req.model.version or req.model.name)
        item.idem_key = key
        self._submit(item, payload, blobs)
        try:
            with self._wait_lock:
                self._waiting.add(item)
            self._waiters.submit(self._wait, item)
        except RuntimeError as exc:              # close() shut the pool meanwhile
            raise ShuttingDown("this API process is stopping; retry on another "
                               "instance") from exc

    def _submit(self, item: WorkItem, payload: dict, blobs: dict[str, bytes]) -> None:
        """Queue the item's job (its deadline goes along on Redis's clock), or join the
        job its idempotency key names."""
        key = item.idem_key
        try:
            sub = self.queue.submit(item.id, payload, blobs, idem_key=key,
                                    budget_s=max(0.0, item.deadline - time.monotonic()))
        except QueueUnavailable as exc:
            self._redis_error = str(exc)
            raise
        item.replayed = not sub.created
        if item.replayed:
            item.id, item.on_cancel = sub.job_id, None   # a shared job is not ours to cancel
        else:
            item.on_cancel = lambda: self._cancel_later(item.id, key)

    def _cancel_later(self, job_id: str, key: str) -> None:
        try:
            self._cancels.submit(self._cancel, job_id, key)
        except RuntimeError:                     # shutting down: nobody will take it now
            pass

    def _cancel(self, job_id: str, key: Optional[str] = None) -> None:
        try:
            self.queue.cancel(job_id, key)
        except QueueUnavailable as exc:
            log.warning("could not mark job %s canceled: %s", job_id, exc)

    def _wait(self, item: WorkItem) -> None:
        try:
            result = self._wait_for_result(item)
            if item.replayed and not result.ok and result.meta.get("status") in (499, 504):
                # The job we joined was given up by its own caller (or ran out of its
                # caller's time), not by ours: its key was released, so queue our own.
                item.id = uuid.uuid4().hex
                self._submit(item, *to_job(item.request))
                result = self._wait_for_result(item)
        except ServiceError as exc:
            item.fail(exc)
            return
        except Exception as exc:             # a waiter must resolve its item, always
            log.exception("waiting for job %s failed", item.id)
            item.fail(exc)
            return
        finally:
            with self._wait_lock:
                self._waiting.discard(item)
        elapsed = time.monotonic() - item.admitted
        timings = result.meta.get("timings", {})
        for stage in ("encode", "denoise", "decode"):
            item.timings[stage] = float(timings.get(stage, 0.0))
        # queue: everything that was not inference (Redis, waiting for a worker)
        item.timings["queue"] = max(0.0, elapsed - sum(item.timings[s] for s in
                                                       ("encode", "denoise", "decode")))
        if result.ok:
            seed, fmt = result.meta.get("seed"), result.meta.get("format")
            if seed is not None and fmt and (seed, fmt) != (item.request.seed,
                                                          item.request.output_format):
                # a stored result of another request with the same Idempotency-Key:
                # describe the image as it was made
                item.request = dataclasses.replace(item.request, seed=int(seed),
                                                   output_format=fmt)
            item.succeed(result.data)
        else:
            item.fail(error_from_result(result.error or "the job failed", result.meta))

    def _wait_for_result(self, item: WorkItem):
        outage_since: Optional[float] = None
        check_known = False
        while True:
            if self._stop.is_set():
                raise ShuttingDown("this API process is stopping")
            now = time.monotonic()
            reason = item.abandon_reason(now)
            if reason is not None:
                if not item.replayed:           # nobody waits for it: workers drop it
                    self._cancel(item.id, item.idem_key)
                raise reason
            lost = False
            try:
                if check_known:
                    lost = not self.queue.job_exists(item.id, ("pixels",))
                    check_known = False
                if not lost:
                    if item.state is JobState.queued and self.queue.started(item.id):
                        item.state = JobState.running        # GET /v1/jobs shows it
                    return self.queue.wait_result(
                        item.id, timeout_s=max(0.01, min(1.0, item.deadline - now)))
            except ResultTimeout:
                outage_since = None
                continue
            except QueueUnavailable:
                if outage_since is None:
                    outage_since = now
                if now - outage_since >= OUTAGE_GRACE_S or self._stop.is_set():
                    raise
                check_known = True
                time.sleep(0.25)
                continue
            raise QueueUnavailable("Redis restarted and lost this job (it kept no copy on "
                                   "disk); send the request again")
