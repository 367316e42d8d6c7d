"""The worker role in this process: the real app (role worker, tiny model) fed through the
real Redis by this test, which plays the API with the same `RedisQueue` calls."""

from __future__ import annotations

import time

import numpy as np
import pytest

from service.redis_queue import QueueConfig, RedisQueue
from service.validation import ValidatedRequest
from service.wire import served_from_json, to_job
from tests.helpers.images import decode, photo
from tests.helpers.service import metric, running_app, settings_for

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.timeout(120)
URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix(redis_prefix) -> str:
    return redis_prefix


def worker_settings(model_dirs, prefix: str, **overrides):
    return settings_for({"sr": model_dirs["sr"]}, role="worker", redis_url=URL,
                        redis_prefix=prefix, worker_name="w-test", **overrides)


def submit(queue: RedisQueue, job_id: str, pixels: np.ndarray, seed: int,
           budget_s: float = 60.0) -> None:
    served = served_from_json(queue.workers()["w-test"]["models"])
    req = ValidatedRequest(task="sr", pixels=pixels, mask=None, seed=seed,
                           output_format="png", model=served["sr"])
    payload, blobs = to_job(req)
    queue.submit(job_id, payload, blobs, budget_s=budget_s)


def test_worker_role_runs_jobs_from_redis_and_serves_only_probes(model_dirs, prefix):
    import model
    queue = RedisQueue(URL, QueueConfig(prefix=prefix))
    pixels = photo(20, 28, seed=4)
    with running_app(worker_settings(model_dirs, prefix)) as client:
        submit(queue, "ok", pixels, seed=8)
        # late on Redis's clock, whatever this host's clock says
        submit(queue, "late", pixels, seed=8, budget_s=-1)
        queue.cancel("gone")
        submit(queue, "gone", pixels, seed=8)
        queue.submit("bad", {"v": 1, "task": "sr"}, {"pixels": b"x"})     # no shape, seed...
        submit(queue, "after", pixels, seed=9)
        done = {j: queue.wait_result(j, 30) for j in ("ok", "late", "gone", "bad", "after")}
        assert client.post("/v1/restore").status_code == 404     # not an API process
        metrics = client.get("/metrics").text
        ready = client.get("/readyz").json()["detail"]

    expected = model.load(model_dirs["sr"]).restore(pixels, seed=8, tile=16)
    assert done["ok"].ok and np.array_equal(decode(done["ok"].data), expected)
    assert set(done["ok"].meta["timings"]) == {"queue", "encode", "denoise", "decode"}
    assert (done["late"].status, done["late"].meta["status"]) == ("failed", 504)
    assert (done["gone"].status, done["gone"].meta["status"]) == ("failed", 499)
    assert done["late"].attempts == done["gone"].attempts == 1          # no retries
    assert not done["bad"].ok and "unreadable job" in done["bad"].error
    assert done["after"].ok                         # the pump lived on after the bad job
    assert "resshift_stream_length 0.0" in metrics and "resshift_redis_up 1.0" in metrics
    assert "taking jobs from Redis as w-test" in ready
    assert queue.workers() == {}                    # it left the group when it stopped


def test_a_stopping_worker_gives_its_jobs_back_without_using_an_attempt(model_dirs, prefix):
    queue = RedisQueue(URL, QueueConfig(prefix=prefix))
    settings = worker_settings(model_dirs, prefix, shutdown_grace_s=0.0, max_wait_ms=0.0)
    with running_app(settings):
        for k in range(3):                         # ~2 s each: not done by the close
            submit(queue, f"job-{k}", photo(112, 112, seed=k), seed=k)
        end = time.monotonic() + 30
        while queue.stats().pending < 3:           # the worker holds all three
            assert time.monotonic() < end
            time.sleep(0.01)
    # stopped with no grace: what it had not finished is back in the stream, attempt 1
    finished = [j for j in ("job-0", "job-1", "job-2") if queue.result(j) is not None]
    back = queue.claim("next", count=3, block_ms=500)
    assert len(back) + len(finished) == 3 and back, finished
    assert all(e.attempt == 1 for e in back)


def test_a_small_job_overtakes_a_large_one_in_the_worker_role(model_dirs, prefix):
    # The worker role runs the embedded worker threads: the same ranking applies to jobs
    # taken from Redis. 72x72: 64 tiles a step; 16x16: one.
    queue = RedisQueue(URL, QueueConfig(prefix=prefix))
    with running_app(worker_settings(model_dirs, prefix, max_batch=8)) as client:
        worker = client.app.state.services.scheduler.local.workers[0]
        submit(queue, "large", photo(72, 72, seed=5), seed=1)
        end = time.monotonic() + 30
        while not worker._stepping:
            assert time.monotonic() < end
            time.sleep(0.001)
        before = metric(client.get("/metrics").text, "resshift_batch_size_count", task="sr")
        submit(queue, "small", photo(16, 16, seed=2), seed=2)
        assert queue.wait_result("small", 30).ok
        after = metric(client.get("/metrics").text, "resshift_batch_size_count", task="sr")
        assert queue.result("large") is None          # still running
        assert after - before <= 4 + 2, after - before
        assert queue.wait_result("large", 60).ok
