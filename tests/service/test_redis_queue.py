"""The Redis Streams job transport against the real Redis at 127.0.0.1:6379.

Each test has its own key prefix and deletes its keys afterwards. Time-dependent steps
(reclaiming after the visibility timeout) poll until a generous deadline instead of
asserting on durations.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable, Iterator

import pytest

redis = pytest.importorskip("redis", reason="the redis package is not installed")

from service.errors import status_and_code  # noqa: E402
from service.redis_queue import (  # noqa: E402
    JobFailed, QueueConfig, QueueUnavailable, RedisQueue, ResultTimeout,
    idempotency_key)
from tests.helpers.service import free_port, poll, reachable  # noqa: E402

pytestmark = pytest.mark.timeout(30)

URL = "redis://127.0.0.1:6379/0"
# how long a poll waits for a claim: well inside the test timeout, so a miss fails with
# the poll's message rather than the timeout's
CLAIM_S = 10.0


@pytest.fixture(scope="module")
def redis_client() -> Iterator["redis.Redis"]:
    if not reachable(6379):
        pytest.skip("no Redis server at 127.0.0.1:6379 (these tests need a real one)")
    client = redis.Redis.from_url(URL, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def make_queue(redis_client) -> Iterator[Callable[..., RedisQueue]]:
    """Queues under one unique prefix for this test; every key under it is deleted after."""
    prefix = f"test-resshift-{uuid.uuid4().hex[:12]}:"
    queues: list[RedisQueue] = []

    def make(**overrides) -> RedisQueue:
        q = RedisQueue(URL, QueueConfig(prefix=prefix, **overrides))
        queues.append(q)
        return q

    yield make
    for q in queues:
        q.client.close()
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.delete(*keys)
    assert not list(redis_client.scan_iter(match=prefix + "*"))


def test_round_trip_with_blobs(make_queue):
    q = make_queue()
    image, mask = bytes(range(256)) * 1000, b"\x00\xff" * 500
    sub = q.submit("job-1", {"task": "realsr", "seed": 7}, {"image": image, "mask": mask})
    assert sub.job_id == "job-1" and sub.created

    [entry] = q.claim("w1", count=4, block_ms=500)
    assert entry.job_id == "job-1" and entry.attempt == 1
    assert entry.payload == {"task": "realsr", "seed": 7}
    assert entry.blobs == {"image": image, "mask": mask}
    # the stream entry references the blobs; the bytes are not in it
    [(_, fields)] = q.client.xrange(q.stream)
    assert max(len(v) for v in fields.values()) < 1000

    assert q.result("job-1") is None
    assert q.complete(entry, b"restored-png", {"took_ms": 12})
    res = q.wait_result("job-1", timeout_s=5)
    assert res.ok and res.data == b"restored-png" and res.meta == {"took_ms": 12}
    assert res.attempts == 1 and res.raise_for_failure() is res
    # finished: entry acked and deleted, input blobs freed, result and notify keep a TTL
    s = q.stats()
    assert (s.length, s.pending) == (0, 0)
    assert q.client.exists(*entry.blob_keys.values()) == 0
    assert 0 < q.client.ttl(q.config.prefix + "result:job-1") <= q.config.result_ttl_s
    assert q.claim("w1", block_ms=0) == []


def test_wait_result_wakes_on_completion_from_another_thread(make_queue):
    q = make_queue()
    q.submit("job-1", {}, {"image": b"x"})
    [entry] = q.claim("w1", block_ms=500)
    t = threading.Timer(0.1, q.complete, args=(entry, b"out"))
    t.start()
    try:
        assert q.wait_result("job-1", timeout_s=10).data == b"out"
    finally:
        t.join()


def test_wait_result_timeout_is_typed(make_queue):
    q = make_queue()
    q.submit("job-1", {})
    with pytest.raises(ResultTimeout) as info:
        q.wait_result("job-1", timeout_s=0.2)
    assert status_and_code(info.value)[0] == 504


def test_two_consumers_share_without_duplicates(make_queue):
    q = make_queue()
    ids = [f"job-{i}" for i in range(20)]
    for i in ids:
        q.submit(i, {"n": i}, {"image": i.encode()})
    seen: dict[str, list[str]] = {"a": [], "b": []}
    while True:
        got_a = q.claim("a", count=3, block_ms=0)
        got_b = q.claim("b", count=3, block_ms=0)
        if not got_a and not got_b:
            break
        for name, got in (("a", got_a), ("b", got_b)):
            for e in got:
                assert e.blobs["image"] == e.job_id.encode()
                seen[name].append(e.job_id)
                q.complete(e, e.job_id.encode())
    assert seen["a"] and seen["b"]
    assert sorted(seen["a"] + seen["b"]) == sorted(ids)
    assert not set(seen["a"]) & set(seen["b"])
    assert all(q.wait_result(i, 1).data == i.encode() for i in ids)


def test_dead_consumer_entry_is_reclaimed(make_queue):
    q = make_queue(visibility_timeout_ms=200)
    q.submit("job-1", {"n": 1}, {"image": b"pixels"})
    [lost] = q.claim("dies", block_ms=500)          # claimed, never acked
    assert q.stats().consumers["dies"]["pending"] == 1

    [entry] = poll(lambda: q.claim("survivor", block_ms=50), CLAIM_S)
    assert entry.entry_id == lost.entry_id and entry.attempt == 2
    assert entry.blobs == {"image": b"pixels"}
    assert q.complete(entry, b"done")
    assert q.wait_result("job-1", 5).data == b"done"
    # the slow "dead" worker finishing late changes nothing
    assert not q.complete(lost, b"late")
    assert q.wait_result("job-1", 5).data == b"done"


def test_failing_entry_is_dead_lettered_with_its_error(make_queue):
    q = make_queue(max_attempts=3)
    q.submit("job-1", {"n": 1}, {"image": b"pixels"})
    attempts = []
    for _ in range(3):
        [e] = q.claim("w1", block_ms=500)
        attempts.append(e.attempt)
        assert e.blobs == {"image": b"pixels"}      # retries reuse the stored blobs
        requeued = q.fail(e, f"CUDA error at attempt {e.attempt}")
    assert attempts == [1, 2, 3] and requeued is False
    assert e.last_error == "CUDA error at attempt 2"

    res = q.wait_result("job-1", 5)
    assert not res.ok and "CUDA error at attempt 3" in res.error and res.attempts == 3
    with pytest.raises(JobFailed) as info:
        res.raise_for_failure()
    assert status_and_code(info.value)[0] == 500
    [dead] = q.dead_letters()
    assert dead["job_id"] == "job-1" and dead["attempts"] == "3"
    assert "CUDA error at attempt 3" in dead["error"] and '"n": 1' in dead["payload"]
    s = q.stats()
    assert (s.length, s.pending, s.dead_letters) == (0, 0, 1)
    assert q.claim("w1", block_ms=0) == []


def test_entry_that_keeps_killing_workers_is_dead_lettered_on_claim(make_queue):
    q = make_queue(visibility_timeout_ms=50, max_attempts=2)
    q.submit("job-1", {}, {"image": b"poison"})
    [first] = q.claim("w1", block_ms=500)           # worker dies
    [second] = poll(lambda: q.claim("w2", block_ms=20), CLAIM_S)   # and the next one too
    assert (first.attempt, second.attempt) == (1, 2)
    # third delivery exceeds max_attempts: dead-lettered, not handed out
    end = time.monotonic() + 10
    while q.result("job-1") is None and time.monotonic() < end:
        assert q.claim("w3", block_ms=20) == []
        time.sleep(0.02)
    res = q.wait_result("job-1", 1)
    assert not res.ok and "crashed" in res.error and "after 2 attempts" in res.error
    assert q.dead_letters()[0]["job_id"] == "job-1"


def test_fail_without_retry_ends_at_once_without_dead_letter(make_queue):
    q = make_queue()
    key = idempotency_key(b"img", None, {}, 0, "v1")
    q.submit("job-1", {}, {"image": b"x"}, idem_key=key)
    [e] = q.claim("w1", block_ms=500)
    assert q.fail(e, "mask size mismatch", retry=False) is False
    res = q.wait_result("job-1", 5)
    assert not res.ok and res.error == "mask size mismatch"
    assert q.dead_letters() == []
    # a failed job releases its idempotency key: a resubmission computes again
    assert q.submit("job-2", {}, {"image": b"x"}, idem_key=key).created


def test_idempotency_returns_the_same_job(make_queue):
    q = make_queue()
    params = {"task": "realsr", "steps": 4}
    k1 = idempotency_key(b"img", b"mask", params, 3, "realsr_v3@abc")
    assert k1 == idempotency_key(b"img", b"mask", dict(reversed(params.items())), 3,
                                 "realsr_v3@abc")
    for other in (idempotency_key(b"img2", b"mask", params, 3, "realsr_v3@abc"),
                   idempotency_key(b"img", None, params, 3, "realsr_v3@abc"),
                   idempotency_key(b"img", b"mask", {**params, "steps": 5}, 3, "realsr_v3@abc"),
                   idempotency_key(b"img", b"mask", params, 4, "realsr_v3@abc"),
                   idempotency_key(b"img", b"mask", params, 3, "realsr_v3@abd")):
        assert other != k1

    first = q.submit("job-1", params, {"image": b"img"}, idem_key=k1)
    dup = q.submit("job-2", params, {"image": b"img"}, idem_key=k1)
    assert first.created and not dup.created and dup.job_id == "job-1"
    assert q.stats().length == 1                     # the duplicate queued nothing
    assert q.client.exists(q.config.prefix + "blob:job-2:image") == 0

    [e] = q.claim("w1", block_ms=500)
    q.complete(e, b"out")
    again = q.submit("job-3", params, {"image": b"img"}, idem_key=k1)
    assert again.job_id == "job-1" and q.wait_result(again.job_id, 1).data == b"out"


def test_redis_down_raises_typed_error_quickly():
    port = free_port()                                # a port nobody listens on
    q = RedisQueue(f"redis://127.0.0.1:{port}/0", QueueConfig(prefix="unused:"))
    start = time.monotonic()
    for call in (q.ping, lambda: q.submit("j", {}, {"image": b"x"}),
                 lambda: q.claim("w", block_ms=100), lambda: q.wait_result("j", 1),
                 q.stats):
        with pytest.raises(QueueUnavailable) as info:
            call()
        assert status_and_code(info.value) == (503, "queue_unavailable")
    assert time.monotonic() - start < 10             # refused, not hung


def test_metrics(make_queue):
    q = make_queue()
    s = q.stats()
    assert (s.length, s.pending, s.lag, s.dead_letters) == (0, 0, 0, 0)
    assert s.oldest_age_s == 0 and s.oldest_pending_age_s == 0 and s.consumers == {}

    for i in range(5):
        q.submit(f"job-{i}", {})
    s = q.stats()
    assert (s.length, s.pending, s.lag) == (5, 0, 5)
    assert 0 <= s.oldest_age_s < 60 and s.oldest_pending_age_s == 0

    got = q.claim("w1", count=2, block_ms=0)
    q.claim("w2", count=1, block_ms=0)
    s = q.stats()
    assert (s.length, s.pending, s.lag) == (5, 3, 2)
    assert 0 <= s.oldest_pending_age_s <= s.oldest_age_s < 60
    assert s.consumers["w1"]["pending"] == 2 and s.consumers["w2"]["pending"] == 1
    assert s.consumers["w1"]["idle_s"] >= 0

    for e in got:
        q.complete(e, b"r")
    s = q.stats()
    assert (s.length, s.pending, s.lag) == (3, 1, 2)
    assert s.consumers["w1"]["pending"] == 0


def test_lost_stream_and_group_are_recreated(make_queue):
    """A restarted Redis without persistence has no stream and no group; the queue
    object that had created them carries on without a restart of its process."""
    q = make_queue()
    q.submit("job-1", {})
    q.client.delete(q.stream)                        # what a Redis restart does to us
    assert q.stats().length == 0
    q.client.delete(q.stream)
    q.submit("job-2", {}, {"image": b"x"})           # XADD recreates the bare stream
    [e] = q.claim("w1", block_ms=500)                # NOGROUP -> group recreated at 0
    assert e.job_id == "job-2" and e.blobs == {"image": b"x"}
    q.complete(e, b"ok")
    assert q.wait_result("job-2", 5).data == b"ok"


def test_renewed_entries_of_a_live_worker_are_not_taken_over(make_queue):
    q = make_queue(visibility_timeout_ms=1500)
    q.submit("job-1", {"n": 1}, {"image": b"pixels"})
    [held] = q.claim("slow", block_ms=500)
    for _ in range(8):                              # 1.6 s of work, renewed every 0.2 s
        time.sleep(0.2)
        assert q.renew("slow", [held]) == 1
        assert q.claim("other", block_ms=0) == []
    time.sleep(1.7)                                 # stops renewing: now it is taken over
    [taken] = poll(lambda: q.claim("other", block_ms=50), CLAIM_S)
    assert taken.entry_id == held.entry_id and taken.attempt == 2
    assert q.renew("slow", [held]) == 0             # no longer its own: left alone


def test_release_requeues_without_counting_an_attempt(make_queue):
    q = make_queue(max_attempts=1)
    q.submit("job-1", {"n": 1}, {"image": b"pixels"})
    [first] = q.claim("stopping", block_ms=500)
    q.release(first, "a worker shut down")
    [again] = poll(lambda: q.claim("next", block_ms=50), CLAIM_S)
    assert again.attempt == 1 and again.blobs == {"image": b"pixels"}
    assert q.complete(again, b"ok") and q.wait_result("job-1", 1).ok


def test_cancel_marks_and_job_exists(make_queue):
    q = make_queue()
    q.submit("job-1", {"n": 1}, {"pixels": b"x"})
    assert q.job_exists("job-1", ("pixels",)) and not q.job_exists("job-2", ("pixels",))
    assert q.canceled(["job-1", "job-2"]) == set()
    q.cancel("job-1")
    assert q.canceled(["job-1", "job-2"]) == {"job-1"}
    [entry] = q.claim("w", block_ms=500)
    q.complete(entry, b"r")
    assert q.job_exists("job-1", ("pixels",))       # by its result now (blobs are gone)


def test_announce_workers_and_retire(make_queue):
    q = make_queue()
    q.announce("w1", {"models": {"sr": {}}})
    q.announce("w2", {"models": {}})
    assert set(q.workers()) == {"w1", "w2"} and q.workers()["w1"]["models"] == {"sr": {}}
    q.submit("job-1", {"n": 1})
    q.claim("w2", block_ms=500)
    q.retire("w1")
    q.retire("w2")                                   # holds an entry: stays in the group
    assert q.workers() == {}
    assert set(q.stats().consumers) == {"w2"}
    assert q.stats().pending == 1


def test_prune_forgets_idle_consumers_that_hold_nothing(make_queue):
    q = make_queue()
    q.submit("job-1", {"n": 1})
    q.submit("job-2", {"n": 2})
    q.claim("holds", block_ms=500)
    [done] = q.claim("empty", block_ms=500)
    q.complete(done, b"ok")                          # holds nothing now
    time.sleep(0.3)
    assert q.prune_consumers(max_idle_s=0.2) == ["empty"]
    assert set(q.stats().consumers) == {"holds"}
    assert q.prune_consumers(max_idle_s=60) == []


def test_deadline_on_the_redis_clock_survives_a_retry(make_queue):
    q = make_queue()
    q.submit("job-1", {"n": 1}, budget_s=5.0)
    [first] = q.claim("w", block_ms=500)
    assert 4.0 < first.left_s <= 5.0
    time.sleep(0.3)
    assert q.fail(first, "boom", retry=True)
    [again] = poll(lambda: q.claim("w", block_ms=50), CLAIM_S)
    assert again.deadline_ms == first.deadline_ms            # not reset by the retry
    assert again.left_s <= first.left_s - 0.25
    q.submit("job-2", {"n": 2})
    [plain] = poll(lambda: q.claim("w", block_ms=50), CLAIM_S)
    assert plain.deadline_ms is None and plain.left_s is None


def test_unreadable_presence_records_are_dropped_not_fatal(make_queue):
    q = make_queue()
    q.announce("good", {"models": {}})
    q.client.hset(q.config.prefix + "workers", "junk", b"{not json")
    q.client.hset(q.config.prefix + "workers", "odd", b'{"seen": "x"}')
    assert set(q.workers()) == {"good"}
    assert set(q.client.hkeys(q.config.prefix + "workers")) == {b"good"}
