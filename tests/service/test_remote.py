"""The API role against the real Redis, with this test playing the worker by hand.

The app is the real one (`create_app`, role api); the "worker" is this test calling the
same `RedisQueue` operations a worker process calls, so it can end jobs in ways a healthy
worker rarely does: failing every attempt, refusing the input, never answering.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from service.errors import InferenceFailed, MaskRequired, UnknownTask
from service.redis_queue import QueueConfig, RedisQueue
from service.settings import Settings
from service.validation import ServedModel, ValidatedRequest
from service.wire import error_meta, from_job, served_to_json, to_job
from tests.helpers.images import decode, encode, photo
from tests.helpers.service import form, running_app

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.timeout(60)
URL = "redis://127.0.0.1:6379/0"
SR = ServedModel(task="sr", name="hand-sr", family="resshift", kind="sr", scale=4, steps=4,
                 needs_mask=False, latent_tile=16, input_multiple=8, version="v1")


@pytest.fixture
def prefix(redis_prefix) -> str:
    return redis_prefix


def api_settings(prefix: str, **overrides) -> Settings:
    return Settings(role="api", redis_url=URL, redis_prefix=prefix, models={"sr": "unused"},
                    **overrides)


class HandWorker(threading.Thread):
    """Claims jobs and ends each with ``behave(queue, entry)``."""

    def __init__(self, prefix: str, behave, max_attempts: int = 3):
        super().__init__(daemon=True)
        self.queue = RedisQueue(URL, QueueConfig(prefix=prefix, max_attempts=max_attempts,
                                                 visibility_timeout_ms=60_000))
        self.queue.announce("hand", {"models": served_to_json({"sr": SR})})
        self.behave, self.stop, self.seen = behave, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            for entry in self.queue.claim("hand", count=4, block_ms=100):
                self.seen.append(entry)
                self.behave(self.queue, entry)


def test_a_job_that_fails_every_attempt_is_dead_lettered_and_its_caller_gets_500(prefix):
    worker = HandWorker(prefix, lambda q, e: q.fail(e, "CUDA error: an illegal memory "
                                                      "access", retry=True), max_attempts=3)
    worker.start()
    try:
        with running_app(api_settings(prefix)) as client:
            r = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr", seed=1))
    finally:
        worker.stop.set()
        worker.join()
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "inference_failed"
    assert "gave up after 3 attempts" in r.json()["error"]["message"]
    assert "illegal memory access" in r.json()["error"]["message"]
    assert [e.attempt for e in worker.seen] == [1, 2, 3]
    dead = worker.queue.dead_letters()
    assert len(dead) == 1 and dead[0]["attempts"] == "3"


def test_a_worker_side_input_error_keeps_its_status(prefix):
    def refuse(q, entry):
        q.fail(entry, "task 'sr' is not served here", retry=False,
               meta=error_meta(UnknownTask("x")))
    worker = HandWorker(prefix, refuse)
    worker.start()
    try:
        with running_app(api_settings(prefix)) as client:
            r = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr"))
    finally:
        worker.stop.set()
        worker.join()
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_task", r.text
    assert len(worker.seen) == 1                      # no retry for bad input


def test_the_job_carries_the_validated_pixels_and_the_result_comes_back(prefix):
    pixels = photo(12, 20, seed=3)

    def flip(q, entry):
        req = from_job(entry.payload, entry.blobs, {"sr": SR})
        assert np.array_equal(req.pixels, pixels) and req.seed == 77
        q.complete(entry, encode(req.pixels[::-1].copy()),
                   meta={"timings": {"encode": 0.5, "denoise": 1.0, "decode": 0.25},
                         "seed": req.seed, "format": req.output_format})
    worker = HandWorker(prefix, flip)
    worker.start()
    try:
        with running_app(api_settings(prefix)) as client:
            r = client.post("/v1/restore", **form(encode(pixels), task="sr", seed=77),
                            headers={"Idempotency-Key": "order-1"})
            again = client.post("/v1/restore", **form(encode(photo(8, 8)), task="sr",
                                                      output_format="jpeg"),
                                headers={"Idempotency-Key": "order-1"})
            bad_key = client.post("/v1/restore", **form(encode(pixels), task="sr"),
                                  headers={"Idempotency-Key": "has space"})
            models = client.get("/v1/models").json()["models"]
    finally:
        worker.stop.set()
        worker.join()
    assert r.status_code == 200 and np.array_equal(decode(r.content), pixels[::-1])
    assert r.headers["x-model"] == "hand-sr" and r.headers["x-inference-seconds"] == "1.7500"
    # the same Idempotency-Key returns the stored result; the worker ran one job
    assert again.status_code == 200 and again.content == r.content
    assert again.headers["x-idempotent-replay"] == "true" and len(worker.seen) == 1
    # described as it was made, not as the second request asked
    assert again.headers["x-seed"] == "77" and again.headers["content-type"] == "image/png"
    assert bad_key.status_code == 422 and "Idempotency-Key" in bad_key.text
    assert models[0]["model"] == "hand-sr"


def test_a_caller_past_its_deadline_gets_504_and_the_job_is_marked_canceled(prefix):
    worker = HandWorker(prefix, lambda q, e: None)   # takes jobs, never answers
    worker.start()
    try:
        with running_app(api_settings(prefix, request_timeout_s=1.0)) as client:
            t0 = time.monotonic()
            r = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr"))
            waited = time.monotonic() - t0
            time.sleep(0.3)                            # the cancel mark is set in a thread
    finally:
        worker.stop.set()
        worker.join()
    assert r.status_code == 504 and waited < 5, (r.text, waited)
    assert worker.queue.canceled([worker.seen[0].job_id]) == {worker.seen[0].job_id}


def test_without_workers_or_redis_the_api_says_why(prefix):
    with running_app(api_settings(prefix), ready=False) as client:
        time.sleep(0.2)
        r = client.get("/readyz")
        assert r.status_code == 503 and "no worker has announced" in r.json()["error"]["message"]
    settings = Settings(role="api", redis_url="redis://127.0.0.1:1/0", redis_prefix=prefix)
    with running_app(settings, ready=False) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "Redis at redis://127.0.0.1:1/0" in r.text
        post = client.post("/v1/restore", **form(encode(photo(16, 16))))
        assert post.status_code == 503 and post.json()["error"]["code"] == "queue_unavailable"
        metrics = client.get("/metrics").text
        assert "resshift_redis_up 0.0" in metrics


def test_settings_require_a_redis_url_for_the_split_roles():
    with pytest.raises(ValueError, match="needs RESSHIFT_REDIS_URL"):
        Settings(role="worker")
    with pytest.raises(ValueError, match="not a redis://"):
        Settings(role="api", redis_url="http://localhost:6379")
    assert Settings(role="api", redis_url=URL, max_batch=8, queue_size=4).prefetch == 4


def test_wire_round_trip_with_mask_and_refusals():
    inpaint = ServedModel(task="inpaint", name="m", family="resshift", kind="inpaint",
                          scale=1, steps=4, needs_mask=True, latent_tile=16,
                          input_multiple=8)
    rng = np.random.default_rng(0)
    mask = rng.random((13, 9)) > 0.5
    req = ValidatedRequest(task="inpaint", pixels=photo(13, 9), mask=mask, seed=5,
                           output_format="webp", model=inpaint, notes=("converted from RGBA",))
    payload, blobs = to_job(req)
    assert len(blobs["mask"]) == (13 * 9 + 7) // 8         # bit-packed
    back = from_job(payload, blobs, {"inpaint": inpaint})
    assert np.array_equal(back.pixels, req.pixels) and np.array_equal(back.mask, mask)
    assert (back.seed, back.output_format, back.notes) == (5, "webp", req.notes)
    from service.errors import RemoteError
    with pytest.raises(RemoteError, match="not served by the worker") as err:
        from_job(payload, blobs, {"sr": SR})
    assert err.value.status == 422
    with pytest.raises(ValueError, match="version"):
        from_job({**payload, "v": 99}, blobs, {"inpaint": inpaint})
    assert error_meta(MaskRequired("x")) == {"status": 422, "code": "mask_required"}
    assert error_meta(InferenceFailed("x"))["status"] == 500


def test_idempotency_keys_are_scoped_by_the_callers_api_key(prefix):
    def answer(q, entry):
        q.complete(entry, encode(photo(4, 4, seed=len(worker.seen))))
    worker = HandWorker(prefix, answer)
    worker.start()
    try:
        with running_app(api_settings(prefix, api_keys="k1,k2")) as client:
            def post(key):
                return client.post("/v1/restore", **form(encode(photo(8, 8)), task="sr"),
                                   headers={"Idempotency-Key": "order-1",
                                            "Authorization": f"Bearer {key}"})
            a, b, a_again = post("k1"), post("k2"), post("k1")
    finally:
        worker.stop.set()
        worker.join()
    assert a.status_code == b.status_code == a_again.status_code == 200
    assert len(worker.seen) == 2 and a.content != b.content     # k2 did not get k1's image
    assert a_again.content == a.content and a_again.headers["x-idempotent-replay"] == "true"


def test_an_async_job_shows_running_once_a_worker_took_it(prefix):
    def slow(q, entry):
        q.mark_started([entry.job_id])
        time.sleep(2.0)
        q.complete(entry, encode(photo(4, 4)))
    worker = HandWorker(prefix, slow)
    worker.start()
    try:
        with running_app(api_settings(prefix)) as client:
            job = client.post("/v1/jobs", **form(encode(photo(8, 8)), task="sr")).json()["id"]
            seen = []
            end = time.monotonic() + 20
            while not seen or seen[-1] not in ("succeeded", "failed"):
                assert time.monotonic() < end, seen
                seen.append(client.get(f"/v1/jobs/{job}").json()["status"])
                time.sleep(0.1)
    finally:
        worker.stop.set()
        worker.join()
    assert "running" in seen and seen[-1] == "succeeded", seen


def test_in_redis_mode_a_job_belongs_to_the_key_that_created_it(prefix):
    worker = HandWorker(prefix, lambda q, e: q.complete(e, encode(photo(4, 4))))
    worker.start()
    try:
        with running_app(api_settings(prefix, api_keys="k1,k2")) as client:
            one, two = ({"Authorization": f"Bearer {k}"} for k in ("k1", "k2"))
            job = client.post("/v1/jobs", headers=one,
                              **form(encode(photo(8, 8)), task="sr")).json()["id"]
            end = time.monotonic() + 20
            while client.get(f"/v1/jobs/{job}", headers=one).json()["status"] != "succeeded":
                assert time.monotonic() < end
                time.sleep(0.05)
            for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
                other = client.request(method, f"/v1/jobs/{job}{path}", headers=two)
                assert other.status_code == 404, (method, path, other.text)
                assert other.json()["error"]["code"] == "job_not_found"
            assert client.get(f"/v1/jobs/{job}/result", headers=one).status_code == 200
    finally:
        worker.stop.set()
        worker.join()
