"""The worker under load: cross-request batching, same pixels alone or busy, a free event
loop, deadlines and disconnects that drop a request's tiles."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch

import model

from tests.helpers.images import decode, encode, photo
from tests.helpers.service import (LONG, LiveServer, form, metric, poll, running_app,
                                   settings_for)

# LONG (tests.helpers.service) is a 72x72 LQ: 64 latent tiles a step, a second or more.
# VERY_LONG, 160x160 LQ: 19x19 = 361 tiles a step, 1444 UNet calls at batch 1: tens of seconds on a
# CPU, so a client that gives up after 0.5 s surely leaves while it runs
VERY_LONG = encode(photo(160, 160, seed=6))


def test_tiles_of_different_requests_share_batches_and_results_do_not_change(model_dirs):
    # 16x16 LQ: one latent tile; 16x24: two. A batch of more than 2 tiles therefore holds
    # tiles of several requests.
    shapes = [(16, 16)] * 5 + [(16, 24)] * 2
    pixels = [photo(h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    images = [encode(p) for p in pixels]
    # alone: the model layer on its own (equal to a lone service request, test_app.py)
    restorer = model.load(model_dirs["sr"])
    alone = [restorer.restore(p, seed=i, tile=16) for i, p in enumerate(pixels)]
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=8, max_wait_ms=300)
    with running_app(settings) as c:
        before = c.get("/metrics").text
        with ThreadPoolExecutor(len(images)) as pool:
            busy = list(pool.map(lambda i: c.post("/v1/restore", **form(images[i], seed=i)),
                                 range(len(images))))
        after = c.get("/metrics").text
    assert all(r.status_code == 200 for r in busy)
    for a, b in zip(alone, busy):
        diff = np.abs(a.astype(int) - decode(b.content).astype(int))
        assert diff.max() <= 1, diff.max()          # measured: 0 (bit-identical)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)
    batches = delta("resshift_batch_size_count", task="sr")
    mixed = batches - delta("resshift_batch_size_bucket", task="sr", le="2.0")
    tiles = delta("resshift_batch_size_sum", task="sr")
    assert tiles == 4 * (5 * 1 + 2 * 2)             # every tile of every step ran once
    assert mixed >= 1 and batches < tiles, (batches, mixed, tiles)


def test_a_small_request_overtakes_a_large_one_that_still_finishes(model_dirs):
    # LONG: 64 tiles a step. Served first come first served, the small request's one
    # tile would wait behind the large request's whole step, four times (about 30
    # batches). Ranked by remaining work, it runs in the next batches: one per step.
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=8)
    small = encode(photo(16, 16, seed=2))
    with running_app(settings) as c:
        worker = c.app.state.services.scheduler.workers[0]
        job = c.post("/v1/jobs", **form(LONG, seed=1)).json()
        poll(lambda: worker._stepping, every_s=0.001)     # the large one is denoising
        before = metric(c.get("/metrics").text, "resshift_batch_size_count", task="sr")
        assert c.post("/v1/restore", **form(small, seed=2)).status_code == 200
        after = metric(c.get("/metrics").text, "resshift_batch_size_count", task="sr")
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
        assert after - before <= 4 + 2, after - before   # 4 steps + the batch running
        poll(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")
        assert c.get(f"/v1/jobs/{job['id']}/result").status_code == 200


def test_health_answers_while_a_long_request_is_in_flight(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=1)
    with running_app(settings) as c:
        worker = c.app.state.services.scheduler.workers[0]
        done = threading.Event()
        thread = threading.Thread(target=lambda: (c.post("/v1/restore", **form(LONG)),
                                                  done.set()))
        thread.start()
        poll(lambda: worker._stepping)          # the request is being denoised
        for _ in range(5):
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").status_code == 200
        assert not done.is_set() and c.app.state.services.scheduler.inflight == 1
        thread.join()
        assert done.is_set()


def test_past_the_deadline_is_504_and_the_tiles_leave_the_queue(model_dirs):
    # Each request alone fits its deadline three times over (so admission, which prices
    # a request from this machine's measured rates, lets it in however loaded the
    # machine is); 32 at once, one tile per batch, do not: those still queued when their
    # deadline passes get 504.
    image = encode(photo(16, 16, seed=3))
    with running_app(settings_for({"sr": model_dirs["sr"]}, max_batch=1)) as c:
        assert c.post("/v1/restore", **form(image)).status_code == 200      # warm
        start = time.monotonic()
        assert c.post("/v1/restore", **form(image)).status_code == 200
        alone = time.monotonic() - start
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=1,
                            request_timeout_s=max(0.3, 3 * alone))
    with running_app(settings) as c:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: c.post("/v1/restore", **form(image)), range(32)))
        late = [r for r in answers if r.status_code == 504]
        assert late and {r.status_code for r in answers} <= {200, 504}, \
            [r.status_code for r in answers]
        assert all(r.json()["error"]["code"] == "deadline_exceeded" for r in late)
        poll(lambda: c.app.state.services.scheduler.inflight == 0)
        text = c.get("/metrics").text
        assert metric(text, "resshift_queue_depth") == 0
        assert metric(text, "resshift_requests_total", task="sr", status="504") == len(late)
        # the worker is free and healthy: a small request goes through at once
        settings_ok = c.post("/v1/restore", **form(encode(photo(8, 8))))
        assert settings_ok.status_code == 200


def test_a_client_that_disconnects_cancels_its_request(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=1)
    with LiveServer(settings) as server:
        scheduler = server.app.state.services.scheduler
        try:
            httpx.post(server.url + "/v1/restore", files={"image": ("a.png", VERY_LONG)},
                       timeout=httpx.Timeout(5.0, read=0.5))
            raise AssertionError("the request should not have finished in 0.5 s")
        except httpx.ReadTimeout:
            pass
        poll(lambda: scheduler.inflight == 0)
        text = httpx.get(server.url + "/metrics").text
        assert metric(text, "resshift_requests_total", task="sr", status="499") == 1
        assert metric(text, "resshift_requests_total", task="sr", status="200") == 0
        ok = httpx.post(server.url + "/v1/restore", files={"image": ("a.png",
                                                                     encode(photo(8, 8)))})
        assert ok.status_code == 200


def test_two_workers_share_the_load(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, devices="cpu,cpu", max_batch=1)
    with running_app(settings) as c:
        workers = c.app.state.services.scheduler.workers
        assert len(workers) == 2
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(
                lambda i: c.post("/v1/restore", **form(encode(photo(16, 16, seed=i)), seed=i)),
                range(4)))
        assert all(r.status_code == 200 for r in results)
        single = c.post("/v1/restore", **form(encode(photo(16, 16, seed=0)), seed=0))
        assert np.array_equal(decode(single.content), decode(results[0].content))


def test_the_stored_result_key_changes_with_the_sampling_settings():
    # a result stored under one noise_scale must not answer a request after it changed
    from model.config import config_from_official
    from model.directory import build_networks
    from model.restorer import Restorer
    from service.worker import _version
    from tests.helpers.models import tiny_official

    def restorer(scale):
        official = tiny_official("sr")
        official["diffusion"]["params"]["noise_scale"] = scale
        cfg = config_from_official(official)
        torch.manual_seed(0)
        return Restorer(cfg, *build_networks(cfg))
    one, zero, again = restorer(1.0), restorer(0.0), restorer(0.0)
    assert _version(zero, "torch", "float32") == _version(again, "torch", "float32")
    assert _version(zero, "torch", "float32") != _version(one, "torch", "float32")
