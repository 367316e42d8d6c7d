"""Scale-out with real processes and a real Redis: `resshift serve --role api|worker`.

Each test starts the API and the workers as separate `python -m resshift serve`
processes, as a deployment would, under a key prefix of its own on the Redis at
127.0.0.1:6379 (every key under it is deleted afterwards). The Redis-restart test runs a
private `redis-server` on a free port instead, because it kills and restarts it.

Requests go through real sockets (httpx); results are compared with the embedded mode
(`--role all`, here the same app in this process) for the same seed.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import httpx
import numpy as np
import pytest

from tests.helpers.images import decode, encode, photo
from tests.helpers.service import (Serve, form, free_port, metric, reachable, running_app,
                                   settings_for)

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.timeout(300)
SHARED_URL = "redis://127.0.0.1:6379/0"
WORKER_ENV = {"RESSHIFT_TORCH_THREADS": "1", "RESSHIFT_TILE": "16",
              "RESSHIFT_MAX_WAIT_MS": "5", "RESSHIFT_FACE_SIZE": "32"}


@pytest.fixture
def deployment(tmp_path, model_dirs, redis_prefix) -> Iterator:
    """start(role, name, **env) -> Serve, all under one fresh prefix on the shared Redis
    (its keys are deleted by ``redis_prefix`` after the processes stopped)."""
    prefix = redis_prefix
    started: list[Serve] = []

    def start(role: str, name: str, url: str = SHARED_URL, **env: str) -> Serve:
        base = {**WORKER_ENV, "RESSHIFT_MODELS": f"sr={model_dirs['sr']}",
                "RESSHIFT_REDIS_URL": url, "RESSHIFT_REDIS_PREFIX": prefix,
                "RESSHIFT_WORKER_NAME": name}
        proc = Serve(role, {**base, **env}, tmp_path, name)
        started.append(proc)
        return proc

    start.prefix = prefix
    client = redis.Redis.from_url(SHARED_URL)
    start.redis = client
    yield start
    for proc in started:
        proc.stop()
    client.close()


def embedded_results(model_dirs, cases: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """What `--role all` returns for the same images and seeds (the same settings)."""
    with running_app(settings_for({"sr": model_dirs["sr"]})) as client:
        out = []
        for pixels, seed in cases:
            r = client.post("/v1/restore", **form(encode(pixels), task="sr", seed=seed))
            assert r.status_code == 200, r.text
            out.append(decode(r.content))
        return out


def post_all(url: str, cases: list[tuple[np.ndarray, int]], concurrency: int = 10,
             timeout_s: float = 120.0) -> list[httpx.Response]:
    def one(case):
        pixels, seed = case
        return httpx.post(url + "/v1/restore", timeout=timeout_s,
                          **form(encode(pixels), task="sr", seed=seed))
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, cases))


def results_in_redis(client, prefix: str) -> dict[str, dict[bytes, bytes]]:
    return {k.decode(): client.hgetall(k)
            for k in client.scan_iter(match=prefix + "result:*", count=1000)}


# -- 1. API + two workers ------------------------------------------------------------------
def test_api_and_two_workers_complete_30_jobs_like_the_embedded_mode(deployment, model_dirs):
    cases = [(photo(16 + 4 * (i % 3), 16 + 4 * (i % 2), seed=i), 100 + i) for i in range(30)]
    expected = embedded_results(model_dirs, cases)

    workers = [deployment("worker", f"worker-{k}", RESSHIFT_WORKER_PREFETCH="4")
               for k in range(2)]
    api = deployment("api", "api")
    for proc in (*workers, api):
        proc.wait_ready()

    responses = post_all(api.url, cases)
    assert [r.status_code for r in responses] == [200] * 30, \
        [r.text for r in responses if r.status_code != 200][:3]
    for (pixels, seed), response, want in zip(cases, responses, expected):
        assert response.headers["x-seed"] == str(seed)
        assert np.array_equal(decode(response.content), want)

    # both workers took part, and together they ran each job once
    done = [metric(w.metrics(), "resshift_request_duration_seconds_count", task="sr")
            for w in workers]
    assert sum(done) == 30 and min(done) > 0, done
    # and batched tiles of different jobs into shared UNet calls, as one process does
    texts = [w.metrics() for w in workers]
    calls = sum(metric(t, "resshift_batch_size_count", task="sr") for t in texts)
    tiles = sum(metric(t, "resshift_batch_size_sum", task="sr") for t in texts)
    assert tiles / calls > 2, (tiles, calls)         # measured: 7.3 tiles per call
    results = results_in_redis(deployment.redis, deployment.prefix)
    assert len(results) == 30
    assert {h[b"status"] for h in results.values()} == {b"done"}
    # nothing is left behind without an expiry (results, notify lists, idempotency keys)
    r = deployment.redis
    for key in r.scan_iter(match=deployment.prefix + "*", count=1000):
        if key.decode()[len(deployment.prefix):] not in ("jobs", "dead", "workers"):
            assert r.pttl(key) > 0, key

    # the asynchronous API over Redis: same pixels as the synchronous one
    created = httpx.post(api.url + "/v1/jobs", **form(encode(cases[0][0]), task="sr",
                                                      seed=999))
    assert created.status_code == 202
    job = created.json()["id"]
    end = time.monotonic() + 60
    while httpx.get(f"{api.url}/v1/jobs/{job}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < end
        time.sleep(0.05)
    result = httpx.get(f"{api.url}/v1/jobs/{job}/result")
    sync = httpx.post(api.url + "/v1/restore", **form(encode(cases[0][0]), task="sr",
                                                      seed=999))
    assert result.status_code == 200 and np.array_equal(decode(result.content),
                                                        decode(sync.content))
    # the second identical request (same image, params, seed, model) was a stored replay
    assert sync.headers.get("x-idempotent-replay") == "true"

    # queue gauges come from Redis, per worker too
    text = api.metrics()
    assert metric(text, "resshift_redis_up") == 1.0
    assert metric(text, "resshift_stream_length") == 0.0
    assert 'resshift_worker_pending{worker="worker-0"}' in text
    models = httpx.get(api.url + "/v1/models").json()["models"]
    assert [m["model"] for m in models] == ["tiny-sr"]


# -- 2. a worker killed mid-batch -------------------------------------------------------------
def test_jobs_of_a_worker_killed_mid_batch_complete_once_on_another(deployment, model_dirs):
    cases = [(photo(64, 64, seed=50 + i), 200 + i) for i in range(6)]
    expected = embedded_results(model_dirs, cases)
    fast = dict(RESSHIFT_VISIBILITY_TIMEOUT_S="4", RESSHIFT_WORKER_PREFETCH="6")
    victim = deployment("worker", "victim", **fast)
    api = deployment("api", "api", **fast)
    victim.wait_ready()
    api.wait_ready()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post_all, api.url, cases, 6)
        # SIGKILL as soon as the victim holds jobs (each takes ~0.7 s: it is mid-batch)
        stream = deployment.prefix + "jobs"
        end = time.monotonic() + 60
        while True:
            assert time.monotonic() < end, victim.log()
            try:
                held = deployment.redis.xpending_range(stream, "workers", "-", "+", 10,
                                                       consumername="victim")
            except redis.ResponseError:
                held = []
            if len(held) >= 3:
                break
            time.sleep(0.01)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        rescuer = deployment("worker", "rescuer", **fast)
        responses = running.result(timeout=240)

    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    for response, want in zip(responses, expected):
        assert np.array_equal(decode(response.content), want)
    results = results_in_redis(deployment.redis, deployment.prefix)
    assert len(results) == 6                    # one result per job, none duplicated
    attempts = sorted(int(h[b"attempts"]) for h in results.values())
    assert attempts[-1] == 2, attempts          # the killed worker's jobs were reclaimed
    assert deployment.redis.xlen(deployment.prefix + "dead") == 0
    assert metric(rescuer.metrics(), "resshift_request_duration_seconds_count",
                  task="sr") >= 1


# -- 3. Redis restarted under load ---------------------------------------------------------
class RedisServer:
    """A private, non-persistent redis-server on a free port (killed and restarted)."""

    def __init__(self, workdir: Path):
        self.port, self.workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while not reachable(self.port):
            assert time.monotonic() < end, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.kill()


def test_redis_restart_under_load_bounds_every_request_and_work_resumes(
        deployment, private_redis):
    deadline_s = 20.0
    env = dict(url=private_redis.url, RESSHIFT_REQUEST_TIMEOUT_S=str(deadline_s))
    worker = deployment("worker", "worker", **env)
    api = deployment("api", "api", **env)
    worker.wait_ready()
    api.wait_ready()

    outcomes: list[tuple[float, float, int, str]] = []     # start, seconds, status, code
    stop = time.monotonic() + 1e9

    def client_loop(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            t0 = time.monotonic()
            try:
                r = httpx.post(api.url + "/v1/restore", timeout=deadline_s + 15,
                               **form(encode(photo(32, 32, seed=k * 1000 + i)), task="sr",
                                      seed=i))
                code = r.json()["error"]["code"] if r.status_code != 200 else ""
                outcomes.append((t0, time.monotonic() - t0, r.status_code, code))
            except httpx.TimeoutException:
                outcomes.append((t0, time.monotonic() - t0, 0, "client timeout"))
            time.sleep(0.05)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        loops = [pool.submit(client_loop, k) for k in range(3)]
        time.sleep(3)
        killed_at = time.monotonic()
        private_redis.kill()
        time.sleep(2)
        down = httpx.get(api.url + "/readyz", timeout=5)
        refused = httpx.post(api.url + "/v1/restore", timeout=10,
                             **form(encode(photo(16, 16)), task="sr"))
        time.sleep(2)
        private_redis.start()                  # empty: it kept nothing on disk
        restarted_at = time.monotonic()
        api.wait_ready(timeout_s=30)
        recovered_in = time.monotonic() - restarted_at
        time.sleep(4)
        stop = time.monotonic()
        for loop in loops:
            loop.result(timeout=120)

    assert down.status_code == 503 and "Redis" in down.json()["error"]["message"], down.text
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "queue_unavailable"
    assert recovered_in < 10, recovered_in
    # nobody hung: every answer came within the deadline (plus the outage grace), and was
    # a result or a clear 503
    assert outcomes and max(o[1] for o in outcomes) < deadline_s + 8, max(outcomes)
    assert {o[2] for o in outcomes} <= {200, 503}, [o for o in outcomes if o[2] not in (200, 503)]
    before = [o for o in outcomes if o[0] + o[1] < killed_at]
    after = [o for o in outcomes if o[0] > restarted_at + recovered_in]
    assert before and all(o[2] == 200 for o in before)
    assert after and all(o[2] == 200 for o in after), after          # work resumed
    assert any(o[2] == 503 for o in outcomes)
    assert worker.proc.poll() is None and api.proc.poll() is None    # both rode it out
