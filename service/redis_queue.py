"""Job transport over Redis Streams: the meeting point of API processes and GPU workers.

The API ``submit``s a job and ``wait_result``s for it; workers ``claim`` entries through
one consumer group and end each with ``complete`` or ``fail``. Nothing here knows about
images, models or HTTP: a job is a JSON payload plus named binary blobs.

Semantics
---------
*At-least-once.* An entry stays in the group's pending list (PEL) from delivery until a
worker acknowledges it, so a worker that dies mid-job loses nothing: once the entry has
been idle longer than ``visibility_timeout_ms`` another worker's ``claim`` takes it over
with XAUTOCLAIM. XAUTOCLAIM (rather than XPENDING + XCLAIM) finds and transfers idle
entries in one atomic step, so two live workers never both reclaim the same entry. A
worker that was merely slow may still finish after its entry was reclaimed; the result
key is written only by the first finisher (the rest are acknowledged and dropped), and a
``claim`` skips entries whose job already has a result, so callers see each job finish
exactly once even though work may run twice.

*Attempts and the dead-letter stream.* An entry's attempt number is the number of times
it was delivered (Redis's own delivery counter, raised by every XAUTOCLAIM) plus the
attempts of the entries it was retried from. ``fail`` with retries left re-queues the job
at once as a new entry carrying the error; an entry delivered more than ``max_attempts``
times (one that keeps killing its workers) or failed on its last attempt is moved to the
dead-letter stream, and its caller gets a failed result with the last error instead of
waiting forever. The dead-letter stream holds one entry per such job: job id, the
original entry id, attempts, the last error and the payload (blobs are not kept: they
are the user's data and expire), for an operator to inspect or replay.

*Large inputs cross Redis once.* ``submit`` stores each blob once under its own key with
a TTL; stream entries (including retries) carry only the key names, and finishing a job
deletes them.

*Idempotency.* ``idempotency_key`` hashes everything that changes the output; ``submit``
maps that key to the first job id with SET NX (atomically with queueing the job, in one
script), so a duplicate submission gets the existing job id and its stored result. A job
that fails releases its key, so a resubmission computes again.

Key layout (all under ``prefix``, default ``resshift:``)::

    {prefix}jobs                  stream of unfinished jobs (entries are XDEL'd when done,
                                  so its length is the backlog: queued + in flight)
    {prefix}dead                  dead-letter stream (capped at ``dead_letter_maxlen``)
    {prefix}blob:{job_id}:{name}  input blob (string, blob_ttl_s)
    {prefix}result:{job_id}       hash: status, data, meta (JSON), error, attempts (result_ttl_s)
    {prefix}notify:{job_id}       list a finisher pushes to; waiters BLPOP it (result_ttl_s)
    {prefix}idem:{key}            job id of the first submission with that key (result_ttl_s)
    {prefix}cancel:{job_id}       set when the caller gave up; workers drop the job
    {prefix}started:{job_id}      set when a worker took the job (result_ttl_s)
    {prefix}workers               hash: consumer name -> JSON {"seen": unix time, "info": ...}

Every Redis connection or timeout error surfaces as ``QueueUnavailable`` (a 503 through
``service.errors``); the client reconnects on the next call, so service resumes by
itself when Redis returns. A group lost with a restarted, non-persistent Redis is created
again on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping, Optional

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import DeadlineExceeded, InferenceFailed, NotReady

__all__ = ["QueueUnavailable", "ResultTimeout", "JobFailed", "QueueConfig", "Entry",
           "JobResult", "Submitted", "QueueStats", "RedisQueue", "idempotency_key"]


class QueueUnavailable(NotReady):
    """Redis cannot be reached (refused, timed out, loading); new work gets 503."""

    def __init__(self, message: str):
        super().__init__(message, code="queue_unavailable")


class ResultTimeout(DeadlineExceeded):
    """``wait_result`` ran out of time before the job finished (the job lives on)."""


class JobFailed(InferenceFailed):
    """The job failed for good (dead-lettered or failed without retry)."""


@dataclass(frozen=True)
class QueueConfig:
    """Everything that shapes the queue; one per deployment, shared by API and workers."""

    prefix: str = "resshift:"
    group: str = "workers"
    visibility_timeout_ms: int = 60_000   # idle time after which a worker counts as dead
    max_attempts: int = 3
    result_ttl_s: float = 3600.0
    blob_ttl_s: float = 3600.0            # should exceed the longest expected queue wait
    dead_letter_maxlen: int = 10_000
    socket_timeout_s: float = 5.0         # blocking calls are cut into slices below this
    connect_timeout_s: float = 1.0


@dataclass
class Entry:
    """One delivered stream entry: what a worker needs to run the job and end it."""

    entry_id: str
    job_id: str
    payload: dict[str, Any]
    blobs: dict[str, bytes]
    attempt: int                          # 1 on first delivery
    last_error: Optional[str] = None      # error of the previous attempt, if it failed
    blob_keys: dict[str, str] = field(default_factory=dict, repr=False)
    idem: str = field(default="", repr=False)
    deadline_ms: Optional[int] = None     # Redis clock; None: no deadline was given
    left_s: Optional[float] = None        # deadline_ms - Redis's now, when claimed


@dataclass(frozen=True)
class JobResult:
    """A finished job as the API sees it."""

    job_id: str
    status: Literal["done", "failed"]
    data: Optional[bytes]
    meta: dict[str, Any]
    error: Optional[str]
    attempts: int

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def raise_for_failure(self) -> "JobResult":
        if not self.ok:
            raise JobFailed(self.error or "the job failed")
        return self


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool                         # False: an idempotent duplicate of job_id


@dataclass(frozen=True)
class QueueStats:
    """Queue gauges: the autoscaling signal and the per-worker view."""

    length: int                           # unfinished entries (queued + in flight)
    pending: int                          # delivered, not yet acknowledged
    lag: int                              # never delivered yet
    oldest_age_s: float                   # age of the oldest unfinished entry (0 if none)
    oldest_pending_age_s: float           # age of the oldest delivered, unacked entry
    dead_letters: int
    consumers: dict[str, dict[str, float]]  # name -> {"pending", "idle_s"}


def idempotency_key(image: bytes, mask: Optional[bytes], params: Mapping[str, Any],
                    seed: Optional[int], model_version: str) -> str:
    """SHA-256 over everything that changes the output; equal inputs give equal keys.

    Parts are length-prefixed (no concatenation collisions) and params are canonical JSON
    (key order does not matter).
    """
    h = hashlib.sha256(b"resshift-idem-v1")
    canon = json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)
    for part in (image, b"\x00" if mask is None else b"\x01" + mask, canon.encode(),
                 str(seed).encode(), model_version.encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


# KEYS: stream, idem ('' for none), blob keys...  ARGV: job_id, idem_ttl_ms, blob_ttl_ms,
# payload, blob refs, budget_ms ('' for none), blob values...
# The deadline is stamped with Redis's own clock (TIME), so API and worker hosts whose
# clocks disagree still agree on when a job is too late.
_SUBMIT = """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {0, existing} end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 4], 'PX', ARGV[3]) end
local deadline = ''
if ARGV[6] ~= '' then
  local t = redis.call('TIME')
  deadline = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                      + tonumber(ARGV[6]))
end
local id = redis.call('XADD', KEYS[1], '*', 'job_id', ARGV[1], 'payload', ARGV[4],
                      'blobs', ARGV[5], 'idem', KEYS[2], 'base_attempts', '0',
                      'deadline_ms', deadline)
return {1, id}
"""

# Ends an entry for good. KEYS: result, notify, stream, dead, idem ('' for none), blobs...
# ARGV: group, entry_id, ttl_ms, status, data, meta, error, attempts, dead?, job_id,
# payload, dead maxlen. Only the first finisher of a job writes its result.
_FINISH = """
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
local written = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'data', ARGV[5], 'meta', ARGV[6],
             'error', ARGV[7], 'attempts', ARGV[8])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  written = 1
  if ARGV[9] == '1' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[12], '*', 'job_id', ARGV[10],
               'entry_id', ARGV[2], 'attempts', ARGV[8], 'error', ARGV[7], 'payload', ARGV[11])
  end
  if ARGV[4] == 'failed' and KEYS[5] ~= '' and redis.call('GET', KEYS[5]) == ARGV[10] then
    redis.call('DEL', KEYS[5])
  end
end
for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
return written
"""


# Resets the idle time of the entries ARGV[3..] that consumer ARGV[2] still owns. One
# script, so no other worker's XAUTOCLAIM can take an entry between the ownership check
# and the claim (which would hand it back). JUSTID leaves the delivery counter alone.
_RENEW = """
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: cancel flag, idem ('' for none). ARGV: ttl_ms, job_id. A canceled job gives up
# its idempotency key, so a resubmission computes again instead of joining it.
_CANCEL = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if KEYS[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisQueue:
    """Submit, claim, finish and wait for jobs; safe to share between threads.

    Built from a URL or an existing ``redis.Redis`` (bytes responses). Connecting is lazy:
    constructing never touches the network, so an API can start while Redis is down.
    """

    def __init__(self, url_or_client: "str | redis.Redis" = "redis://127.0.0.1:6379/0",
                 config: QueueConfig = QueueConfig()):
        self.config = c = config
        if isinstance(url_or_client, str):
            self._r = redis.Redis.from_url(
                url_or_client, socket_timeout=c.socket_timeout_s,
                socket_connect_timeout=c.connect_timeout_s, decode_responses=False,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1))
        else:
            self._r = url_or_client
        p = c.prefix
        self.stream, self.dead_stream = p + "jobs", p + "dead"
        self._submit_script = self._r.register_script(_SUBMIT)
        self._finish_script = self._r.register_script(_FINISH)
        self._renew_script = self._r.register_script(_RENEW)
        self._cancel_script = self._r.register_script(_CANCEL)
        self._group_ready = False
        self._cursors: dict[str, str] = {}

    # -- keys ----------------------------------------------------------------------------
    def _key(self, kind: str, *parts: str) -> str:
        return self.config.prefix + ":".join((kind, *parts))

    @property
    def client(self) -> redis.Redis:
        return self._r

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
            self._group_ready = False      # a restarted Redis may have lost the group
            raise QueueUnavailable(f"Redis is unavailable: {e}") from e
        except redis.ResponseError as e:
            # out of memory (maxmemory with noeviction) or a read-only replica after a
            # failover: Redis answers but cannot take work; like down, it passes
            text = str(e)
            if text.startswith(("OOM", "READONLY", "MASTERDOWN", "LOADING")):
                raise QueueUnavailable(f"Redis cannot take writes now: {text}") from e
            raise

    def _ensure_group(self, force: bool = False) -> None:
        if self._group_ready and not force:
            return
        try:
            # id 0: entries added before the group existed are still delivered
            self._r.xgroup_create(self.stream, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def ping(self) -> None:
        """Raise ``QueueUnavailable`` unless Redis answers (for ``/readyz``)."""
        with self._guard():
            self._r.ping()

    # -- API side ------------------------------------------------------------------------
    def submit(self, job_id: str, payload: Mapping[str, Any],
               blobs: Optional[Mapping[str, bytes]] = None,
               idem_key: Optional[str] = None, budget_s: Optional[float] = None
               ) -> Submitted:
        """Queue a job; with ``idem_key``, a duplicate returns the first job's id instead.
        With ``budget_s`` the job's deadline is Redis's now + budget_s; a worker that
        claims it gets ``Entry.left_s`` on the same clock.

        Blobs go to their own keys (TTL ``blob_ttl_s``) in the same atomic script as the
        stream entry and the idempotency mapping, so no half-submitted job is visible.
        """
        blobs = dict(blobs or {})
        refs = {name: self._key("blob", job_id, name) for name in blobs}
        idem = self._key("idem", idem_key) if idem_key else ""
        c = self.config
        with self._guard():
            self._ensure_group()
            created, value = self._submit_script(
                keys=[self.stream, idem, *refs.values()],
                args=[job_id, int(c.result_ttl_s * 1000), int(c.blob_ttl_s * 1000),
                      json.dumps(dict(payload)), json.dumps(refs),
                      "" if budget_s is None else int(budget_s * 1000), *blobs.values()])
        return Submitted(job_id if created else _s(value), bool(created))

    def result(self, job_id: str) -> Optional[JobResult]:
        """The finished job's result, or None while it runs (or after its TTL)."""
        with self._guard():
            h = self._r.hgetall(self._key("result", job_id))
        if not h:
            return None
        h = {_s(k): v for k, v in h.items()}
        ok = _s(h["status"]) == "done"
        return JobResult(job_id=job_id, status="done" if ok else "failed",
                         data=h["data"] if ok else None, meta=json.loads(h["meta"] or b"{}"),
                         error=None if ok else _s(h["error"]), attempts=int(h["attempts"]))

    def job_exists(self, job_id: str, blob_names: "tuple[str, ...]") -> bool:
        """Whether Redis still knows the job: its result, or one of its input blobs (a
        Redis restarted without persistence knows neither)."""
        keys = [self._key("result", job_id), *(self._key("blob", job_id, n) for n in blob_names)]
        with self._guard():
            return bool(self._r.exists(*keys))

    def wait_result(self, job_id: str, timeout_s: float) -> JobResult:
        """Block until the job finishes (done or failed); ``ResultTimeout`` after timeout_s.

        Waits with BLPOP on the job's notify list in slices shorter than the socket
        timeout; a waiter that pops the token pushes it back so other waiters (several API
        processes with the same idempotent job) wake too. The result hash is the truth:
        it is read before every wait, so a notification missed for any reason costs at
        most one slice.
        """
        deadline = time.monotonic() + timeout_s
        notify = self._key("notify", job_id)
        slice_s = max(0.05, min(1.0, self.config.socket_timeout_s / 2))
        while True:
            res = self.result(job_id)
            if res is not None:
                return res
            left = deadline - time.monotonic()
            if left <= 0:
                raise ResultTimeout(f"job {job_id} did not finish within {timeout_s:g} s")
            with self._guard():
                if self._r.blpop([notify], timeout=max(0.01, min(left, slice_s))):
                    # put the token back for other waiters, with the TTL the pop removed
                    pipe = self._r.pipeline(transaction=True)
                    pipe.rpush(notify, b"1")
                    pipe.pexpire(notify, int(self.config.result_ttl_s * 1000))
                    pipe.execute()

    # -- worker side ---------------------------------------------------------------------
    def claim(self, consumer: str, count: int = 1, block_ms: int = 1000) -> list[Entry]:
        """Up to ``count`` entries for ``consumer``: reclaimed ones first, then new ones.

        First XAUTOCLAIM takes entries idle longer than the visibility timeout (their
        worker is presumed dead); only if that leaves room does XREADGROUP read new
        entries, blocking up to ``block_ms`` when nothing was reclaimed. Entries over
        ``max_attempts`` are dead-lettered here, entries of already finished jobs are
        dropped, and neither is returned.
        """
        c = self.config
        block_ms = int(min(block_ms, c.socket_timeout_s * 1000 - 500))
        with self._guard():
            self._ensure_group()
            try:
                raw = self._read(consumer, count, block_ms)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self._ensure_group(force=True)
                raw = self._read(consumer, count, block_ms)
            if not raw:
                return []
            pipe = self._r.pipeline(transaction=False)
            pipe.time()
            for eid, fields in raw:
                pipe.xpending_range(self.stream, c.group, min=eid, max=eid, count=1)
                pipe.exists(self._key("result", _s(fields[b"job_id"])))
            now, *answers = pipe.execute()
            now_ms = now[0] * 1000 + now[1] // 1000
            out = []
            for i, (eid, fields) in enumerate(raw):
                pend, done = answers[2 * i], answers[2 * i + 1]
                entry = self._entry(_s(eid), fields, pend[0]["times_delivered"] if pend else 1)
                if entry.deadline_ms is not None:
                    entry.left_s = (entry.deadline_ms - now_ms) / 1000
                if done:
                    self._finish(entry, "failed", error="duplicate of a finished job")
                elif entry.attempt > c.max_attempts:
                    self._dead_letter(entry, f"gave up after {entry.attempt - 1} attempts; "
                                      f"last error: {entry.last_error or _CRASHED}")
                else:
                    out.append(entry)
            return self._load_blobs(out)

    def _read(self, consumer: str, count: int, block_ms: int) -> list[tuple[bytes, dict]]:
        c = self.config
        # Scan the pending list from where the last call stopped: XAUTOCLAIM looks at
        # about 10 x count entries per call, so restarting at 0-0 could keep a busy
        # worker (small count) from ever reaching dead workers' entries behind live ones.
        cursor = self._cursors.get(consumer, "0-0")
        nxt, raw, _deleted = self._r.xautoclaim(
            self.stream, c.group, consumer, min_idle_time=c.visibility_timeout_ms,
            start_id=cursor, count=max(count, 1))
        self._cursors[consumer] = _s(nxt)
        raw = [(eid, f) for eid, f in raw if f]
        if len(raw) < count:
            got = self._r.xreadgroup(c.group, consumer, {self.stream: ">"},
                                     count=count - len(raw),
                                     block=None if raw or block_ms <= 0 else block_ms)
            for _stream, entries in got or []:
                raw.extend((eid, f) for eid, f in entries if f)
        return raw

    def _entry(self, eid: str, f: dict, delivered: int) -> Entry:
        last = f.get(b"last_error")
        deadline = f.get(b"deadline_ms")
        return Entry(entry_id=eid, job_id=_s(f[b"job_id"]), payload=json.loads(f[b"payload"]),
                     blobs={}, attempt=int(f.get(b"base_attempts", b"0")) + int(delivered),
                     last_error=_s(last) if last else None,
                     blob_keys=json.loads(f.get(b"blobs", b"{}")), idem=_s(f.get(b"idem", b"")),
                     deadline_ms=int(deadline) if deadline else None)

    def _load_blobs(self, entries: list[Entry]) -> list[Entry]:
        keys = [k for e in entries for k in e.blob_keys.values()]
        values = iter(self._r.mget(keys) if keys else [])
        out = []
        for e in entries:
            e.blobs = {name: next(values) for name in e.blob_keys}
            missing = sorted(n for n, v in e.blobs.items() if v is None)
            if missing:
                self._dead_letter(e, f"input blobs expired before a worker took the job: "
                                     f"{', '.join(missing)} (raise blob_ttl_s)")
            else:
                out.append(e)
        return out

    def complete(self, entry: Entry, result: bytes, meta: Optional[Mapping[str, Any]] = None
                 ) -> bool:
        """Store the result (TTL ``result_ttl_s``), wake waiters, acknowledge the entry.

        Returns False when another worker had already finished this job (the result is
        then left as it was).
        """
        with self._guard():
            return self._finish(entry, "done", data=result, meta=meta)

    def fail(self, entry: Entry, error: str, retry: bool = True,
             meta: Optional[Mapping[str, Any]] = None) -> bool:
        """End an attempt with ``error``. Returns True if the job was queued again.

        With ``retry`` and attempts left, the job is re-queued at once as a new entry
        (same blobs, attempt count carried over); otherwise it ends as failed: with
        ``retry`` (attempts used up) it also goes to the dead-letter stream, without
        (an error no retry can fix, such as bad input) it does not.
        """
        with self._guard():
            if not retry:
                self._finish(entry, "failed", error=error, meta=meta)
                return False
            if entry.attempt >= self.config.max_attempts:
                self._dead_letter(entry, f"gave up after {entry.attempt} attempts; "
                                         f"last error: {error}", meta)
                return False
            self._requeue(entry, base_attempts=entry.attempt, last_error=error)
            return True

    def release(self, entry: Entry, reason: str) -> None:
        """Give a job back without counting an attempt (a worker shutting down cleanly):
        it is queued again at once for another worker."""
        with self._guard():
            self._requeue(entry, base_attempts=entry.attempt - 1,
                          last_error=entry.last_error or reason)

    def _requeue(self, entry: Entry, base_attempts: int, last_error: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self.stream, self.config.group, entry.entry_id)
        pipe.xdel(self.stream, entry.entry_id)
        pipe.xadd(self.stream, {
            "job_id": entry.job_id, "payload": json.dumps(entry.payload),
            "blobs": json.dumps(entry.blob_keys), "idem": entry.idem,
            "base_attempts": str(max(0, base_attempts)), "last_error": last_error,
            "deadline_ms": "" if entry.deadline_ms is None else str(entry.deadline_ms)})
        pipe.execute()

    def renew(self, consumer: str, entries: "list[Entry]") -> int:
        """Reset the idle time of ``consumer``'s entries so a long job is not taken over
        while its worker lives. Only entries this consumer still owns are touched (one
        already reclaimed by another worker stays there). Returns how many were renewed.

        XCLAIM with JUSTID does not raise the delivery counter, so renewing never counts
        as an attempt.
        """
        if not entries:
            return 0
        with self._guard():
            return int(self._renew_script(keys=[self.stream], args=[
                self.config.group, consumer, *(e.entry_id for e in entries)]))

    # -- cancellation ------------------------------------------------------------------------
    def cancel(self, job_id: str, idem_key: Optional[str] = None) -> None:
        """Mark a job as abandoned by its caller; a worker holding it drops it. With
        ``idem_key`` (the one it was submitted with) the key is released too, if it
        still names this job."""
        idem = self._key("idem", idem_key) if idem_key else ""
        with self._guard():
            self._cancel_script(keys=[self._key("cancel", job_id), idem],
                                args=[int(self.config.result_ttl_s * 1000), job_id])

    def canceled(self, job_ids: "list[str]") -> set[str]:
        """Which of ``job_ids`` were canceled."""
        if not job_ids:
            return set()
        with self._guard():
            flags = self._r.mget([self._key("cancel", j) for j in job_ids])
        return {j for j, f in zip(job_ids, flags) if f}

    # -- progress ------------------------------------------------------------------------------
    def mark_started(self, job_ids: "list[str]") -> None:
        """Note that a worker has taken these jobs (``GET /v1/jobs`` shows "running")."""
        if not job_ids:
            return
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            for j in job_ids:
                pipe.set(self._key("started", j), b"1", px=int(self.config.result_ttl_s * 1000))
            pipe.execute()

    def started(self, job_id: str) -> bool:
        with self._guard():
            return bool(self._r.exists(self._key("started", job_id)))

    # -- presence ------------------------------------------------------------------------------
    def announce(self, consumer: str, info: Mapping[str, Any]) -> None:
        """Record that ``consumer`` is alive, with what it serves (called every few s)."""
        with self._guard():
            now = self._r.time()
            self._r.hset(self._key("workers"), consumer, json.dumps(
                {"seen": now[0] + now[1] / 1e6, "info": dict(info)}))

    def retire(self, consumer: str) -> None:
        """Remove ``consumer`` from the presence hash and, if it holds no entries, from
        the group (a clean shutdown). A consumer that still holds entries stays in the
        group: deleting it would drop them from the pending list, where nobody could
        reclaim them."""
        with self._guard():
            self._r.hdel(self._key("workers"), consumer)
            with contextlib.suppress(redis.ResponseError):
                held = self._r.xpending_range(self.stream, self.config.group, min="-",
                                              max="+", count=1, consumername=consumer)
                if not held:
                    self._r.xgroup_delconsumer(self.stream, self.config.group, consumer)

    def prune_consumers(self, max_idle_s: float) -> list[str]:
        """Delete consumers that hold nothing and were idle longer than ``max_idle_s``
        (workers gone with their pods: scaled down, rescheduled). Those still holding
        entries stay until another worker has taken the entries over."""
        with self._guard():
            try:
                rows = self._r.xinfo_consumers(self.stream, self.config.group)
            except redis.ResponseError:
                return []
            gone = [_s(r["name"]) for r in rows
                    if int(r["pending"]) == 0 and r["idle"] / 1000 > max_idle_s]
            for name in gone:
                self._r.xgroup_delconsumer(self.stream, self.config.group, name)
        return gone

    def workers(self, max_age_s: float = 30.0) -> dict[str, dict[str, Any]]:
        """consumer -> info of workers seen within ``max_age_s`` (Redis clock); older
        records, and records that are not ours to read (not JSON with "seen" and
        "info"), are deleted: a worker announces itself again within a second."""
        with self._guard():
            now = self._r.time()
            raw = self._r.hgetall(self._key("workers"))
            t = now[0] + now[1] / 1e6
            out, stale = {}, []
            for name, value in raw.items():
                try:
                    rec = json.loads(value)
                    seen, info = float(rec["seen"]), rec["info"]
                except (ValueError, TypeError, KeyError):
                    stale.append(name)
                    continue
                if t - seen <= max_age_s:
                    out[_s(name)] = info
                elif t - seen > 10 * max_age_s:
                    stale.append(name)
            if stale:
                self._r.hdel(self._key("workers"), *stale)
        return out

    def _dead_letter(self, entry: Entry, error: str,
                     meta: Optional[Mapping[str, Any]] = None) -> bool:
        return self._finish(entry, "failed", error=error, meta=meta, dead=True)

    def _finish(self, entry: Entry, status: str, data: bytes = b"",
                meta: Optional[Mapping[str, Any]] = None, error: str = "",
                dead: bool = False) -> bool:
        c = self.config
        written = self._finish_script(
            keys=[self._key("result", entry.job_id), self._key("notify", entry.job_id),
                  self.stream, self.dead_stream, entry.idem, *entry.blob_keys.values()],
            args=[c.group, entry.entry_id, int(c.result_ttl_s * 1000), status, data,
                  json.dumps(dict(meta or {})), error, entry.attempt, "1" if dead else "0",
                  entry.job_id, json.dumps(entry.payload), c.dead_letter_maxlen])
        return bool(written)

    def _gauges(self) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        pipe.time()
        pipe.xlen(self.stream)
        pipe.xpending(self.stream, self.config.group)
        pipe.xrange(self.stream, count=1)
        pipe.xinfo_groups(self.stream)
        pipe.xinfo_consumers(self.stream, self.config.group)
        pipe.xlen(self.dead_stream)
        return pipe.execute()

    # -- inspection ----------------------------------------------------------------------
    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest dead-lettered jobs, newest first (for operators and tests)."""
        with self._guard():
            rows = self._r.xrevrange(self.dead_stream, count=count)
        return [{"id": _s(eid), **{_s(k): _s(v) for k, v in f.items()}} for eid, f in rows]

    def stats(self) -> QueueStats:
        """Stream length, pending count, lag, oldest ages (Redis clock) and per-consumer
        pending/idle, from XLEN, XPENDING, XINFO GROUPS/CONSUMERS and TIME."""
        c = self.config
        with self._guard():
            self._ensure_group()
            try:
                now, length, pend, first, groups, consumers, dead = self._gauges()
            except redis.ResponseError:        # stream or group lost with a restart
                self._ensure_group(force=True)
                now, length, pend, first, groups, consumers, dead = self._gauges()
        now_ms = now[0] * 1000 + now[1] // 1000

        def age(eid: Any) -> float:
            return max(0.0, (now_ms - int(_s(eid).split("-")[0])) / 1000) if eid else 0.0

        group = next((g for g in groups if _s(g["name"]) == c.group), {})
        lag = group.get("lag")
        return QueueStats(
            length=int(length), pending=int(pend["pending"]),
            lag=int(lag) if lag is not None else max(0, int(length) - int(pend["pending"])),
            oldest_age_s=age(first[0][0] if first else None),
            oldest_pending_age_s=age(pend["min"] if pend["pending"] else None),
            dead_letters=int(dead),
            consumers={_s(x["name"]): {"pending": float(x["pending"]),
                                       "idle_s": x["idle"] / 1000} for x in consumers})


_CRASHED = "the worker stopped without finishing (crashed or exceeded the visibility timeout)"
