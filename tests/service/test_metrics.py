"""/metrics after real requests: the docs/design.md names exist and moved as they should."""

from __future__ import annotations

import numpy as np

from tests.helpers.images import encode, photo
from tests.helpers.service import form, metric, poll, running_app, settings_for

NAMES = ["resshift_requests_total", "resshift_request_duration_seconds",
         "resshift_queue_wait_seconds", "resshift_inference_duration_seconds",
         "resshift_batch_size", "resshift_tiles_per_request", "resshift_queue_depth",
         "resshift_inflight_requests", "resshift_gpu_memory_bytes", "resshift_model_info"]


def test_metrics_move_with_real_requests(model_dirs):
    models = {"sr": model_dirs["sr"], "inpaint": model_dirs["inpaint"]}
    with running_app(settings_for(models)) as c:
        start = c.get("/metrics")
        assert start.status_code == 200 and start.headers["content-type"].startswith("text/plain")
        for name in NAMES:                      # every promised family is exposed
            assert f"# TYPE {name} " in start.text, name
        for seed in range(3):                   # 16x24 LQ: 2 latent tiles a step
            assert c.post("/v1/restore", **form(encode(photo(16, 24)), task="sr",
                                                 seed=seed)).status_code == 200
        mask = np.zeros((32, 32), np.uint8)
        mask[4:12, 4:12] = 255
        assert c.post("/v1/restore", **form(encode(photo(32, 32)), task="inpaint",
                                             mask=encode(mask))).status_code == 200
        assert c.post("/v1/restore", **form(b"junk", task="sr")).status_code == 422
        assert c.post("/v1/restore", **form(encode(photo(16, 16)), task="nope")
                      ).status_code == 422
        job = c.post("/v1/jobs", **form(encode(photo(16, 16)), task="sr")).json()
        poll(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")
        text = c.get("/metrics").text

    def value(name, **labels):
        return metric(text, name, **labels)
    assert value("resshift_requests_total", task="sr", status="200") == 3
    assert value("resshift_requests_total", task="inpaint", status="200") == 1
    assert value("resshift_requests_total", task="sr", status="422") == 1
    assert value("resshift_requests_total", task="unknown", status="422") == 1
    assert value("resshift_requests_total", task="sr", status="202") == 1
    # 3 sync + 1 job for sr (warm-up is not a request)
    assert value("resshift_request_duration_seconds_count", task="sr") == 4
    assert value("resshift_request_duration_seconds_sum", task="sr") > 0
    assert value("resshift_queue_wait_seconds_count", task="sr") == 4
    for stage in ("encode", "decode"):
        assert value("resshift_inference_duration_seconds_count", task="sr", stage=stage) == 4
    assert value("resshift_inference_duration_seconds_count", task="sr", stage="denoise") >= 4
    # every step's tiles ran: 3 requests x 4 steps x 2 tiles + the job's 4 x 1
    assert value("resshift_batch_size_sum", task="sr") == 28
    assert value("resshift_tiles_per_request_sum", task="sr") == 3 * 2 + 1
    assert value("resshift_tiles_per_request_count", task="inpaint") == 1
    assert value("resshift_inflight_requests") == 0 and value("resshift_queue_depth") == 0
    assert value("resshift_model_info", task="sr", model="tiny-sr", backend="torch",
                 precision="float32") == 1
    assert value("process_resident_memory_bytes") > 0      # process metrics are there
    assert value("python_info", implementation="CPython") == 1
