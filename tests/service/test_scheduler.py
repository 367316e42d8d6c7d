"""Admission and life cycle: 429 when full, readiness, graceful shutdown."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.errors import NotReady, ShuttingDown
from service.local import LocalScheduler
from service.metrics import Metrics
from service.scheduler import Admission, Scheduler
from service.schemas import JobState
from service.settings import Settings

from tests.helpers.images import encode, photo
from tests.helpers.service import LONG, form, poll, running_app, settings_for


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
        poll(lambda: c.app.state.services.scheduler.inflight == 0)
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
        poll(lambda: svc.scheduler.workers[0]._stepping)
    item = svc.jobs.get(job_id).item
    assert item.state is JobState.failed
    error = item.future.exception()
    assert isinstance(error, ShuttingDown) and "stopped" in str(error)


INTERFACE = {"start", "close", "readiness", "unavailable", "ready", "served", "inflight",
             "submit"}


@pytest.mark.parametrize("role", ["all", "api", "worker"])
def test_each_role_gets_a_scheduler_that_implements_the_interface(role):
    # The app factory picks the implementation; none of them is started here, so no
    # Redis server or model is needed (the Redis client connects on first use).
    if role != "all":
        pytest.importorskip("redis")
        from service.pump import WorkerScheduler
        from service.remote import RemoteScheduler
        expected = RemoteScheduler if role == "api" else WorkerScheduler
    else:
        expected = LocalScheduler
    settings = Settings(role=role, models={"sr": "unused"},
                        redis_url=None if role == "all" else "redis://127.0.0.1:1/0")
    scheduler = create_app(settings).state.services.scheduler
    assert type(scheduler) is expected and isinstance(scheduler, Scheduler)
    assert not type(scheduler).__abstractmethods__
    # not started: not ready, and every part of the interface says so
    assert scheduler.readiness()[0] is False and scheduler.ready is False
    assert scheduler.unavailable() is not None and scheduler.inflight == 0
    with pytest.raises(NotReady):
        scheduler.served


def test_the_interface_is_what_the_app_uses_and_a_partial_implementation_is_refused():
    assert Scheduler.__abstractmethods__ == INTERFACE

    class WithoutServed(Admission):
        def start(self): pass

        def close(self, grace_s=None): pass

        def readiness(self): return False, "never"

        @property
        def ready(self): return False

        def _dispatch(self, item, idempotency_key): pass

    with pytest.raises(TypeError, match="served"):
        WithoutServed(settings_for({"sr": "x"}), Metrics())
