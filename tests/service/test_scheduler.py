"""Admission and life cycle: 429 when full, readiness, graceful shutdown."""

from __future__ import annotations

import pytest

from service.errors import NotReady, ShuttingDown
from service.local import LocalScheduler
from service.metrics import Metrics
from service.schemas import JobState

from .conftest import encode, form, photo, running_app, settings_for
from .test_worker import LONG, _poll


def test_a_full_queue_answers_429_with_retry_after_at_once(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=1, queue_size=1)
    with running_app(settings) as c:
        job = c.post("/v1/jobs", **form(LONG)).json()            # takes the only slot
        refused = c.post("/v1/restore", **form(encode(photo(8, 8))))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        assert c.post("/v1/jobs", **form(encode(photo(8, 8)))).status_code == 429
        c.delete(f"/v1/jobs/{job['id']}")
        _poll(lambda: c.app.state.services.scheduler.inflight == 0)
        assert c.post("/v1/restore", **form(encode(photo(8, 8)))).status_code == 200


def test_not_started_is_not_ready():
    scheduler = LocalScheduler(settings_for({"sr": "x"}), Metrics())
    assert scheduler.readiness() == (False, "workers not started")
    with pytest.raises(NotReady):
        scheduler.served


def test_shutdown_lets_in_flight_jobs_finish_within_the_grace(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, shutdown_grace_s=60)
    with running_app(settings) as c:
        svc = c.app.state.services
        job_id = c.post("/v1/jobs", **form(encode(photo(24, 24)))).json()["id"]
    item = svc.jobs.get(job_id).item          # the app has shut down here
    assert item.state is JobState.succeeded
    with pytest.raises(ShuttingDown):
        svc.scheduler.submit(item.request, 1.0)
    assert all(not w.is_alive() for w in svc.scheduler.workers)


def test_shutdown_fails_what_cannot_finish_with_a_clear_status(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, max_batch=1, shutdown_grace_s=0)
    with running_app(settings) as c:
        svc = c.app.state.services
        job_id = c.post("/v1/jobs", **form(LONG)).json()["id"]
        _poll(lambda: svc.scheduler.workers[0]._stepping)
    item = svc.jobs.get(job_id).item
    assert item.state is JobState.failed
    error = item.future.exception()
    assert isinstance(error, ShuttingDown) and "stopped" in str(error)
