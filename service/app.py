"""``create_app(settings)``: the FastAPI application, built on demand, never at import.

Models and workers start in the lifespan: the worker threads load the models and run a
warm-up batch in the background while the HTTP side already answers (``/healthz`` 200,
``/readyz`` and the work endpoints 503 until ready). Shutdown stops admitting work,
gives in-flight items ``RESSHIFT_SHUTDOWN_GRACE_S`` to finish and fails the rest with
a clear status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Optional

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.errors import ModelError

from .deps import Services
from .errors import ServiceError, error_response, status_and_code
from .jobs import JobStore
from .local import LocalScheduler
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, RequestIdMiddleware
from .routers import jobs, ops, restore, ui
from .routers.common import count_refused
from .scheduler import Scheduler
from .settings import Settings

log = logging.getLogger("resshift.service")


def _scheduler(settings: Settings, metrics: Metrics) -> Scheduler:
    """The one place a role picks its scheduler (see ``service.scheduler``). all:
    in-process workers. api/worker: meet in Redis (service.remote, service.pump)."""
    if settings.role == "all":
        return LocalScheduler(settings, metrics)
    from .pump import WorkerScheduler
    from .queue_metrics import StreamCollector
    from .redis_queue import RedisQueue
    from .remote import RemoteScheduler, queue_config
    queue = RedisQueue(settings.redis_url, queue_config(settings))
    metrics.registry.register(StreamCollector(queue))
    cls = RemoteScheduler if settings.role == "api" else WorkerScheduler
    return cls(settings, metrics, queue)


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    """Build the app. ``settings`` defaults to ``Settings()`` (the environment)."""
    settings = settings or Settings()
    metrics = Metrics()
    svc = Services(settings=settings, metrics=metrics,
                   scheduler=_scheduler(settings, metrics), jobs=JobStore(settings.job_ttl_s))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.scheduler.start()
        sweeper = asyncio.create_task(svc.jobs.sweep_forever())
        try:
            yield
        finally:
            log.info("shutting down: %d request(s) in flight", svc.scheduler.inflight)
            sweeper.cancel()
            await asyncio.to_thread(svc.scheduler.close)
            await svc.jobs.close()

    app = FastAPI(title="ResShift restoration service", version="1",
                  description="Diffusion image restoration (ResShift): super-resolution, "
                              "inpainting, face restoration. See docs/service.md.",
                  lifespan=lifespan)
    app.state.services = svc

    async def handle(request, exc):
        if not getattr(request.state, "counted", False):
            count_refused(svc, request.url.path, request.method, status_and_code(exc)[0])
        return error_response(exc)

    for exc_type in (ServiceError, ModelError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(exc_type, handle)

    if settings.role != "worker":       # a worker's HTTP is for probes and /metrics only
        app.include_router(restore.router)
        app.include_router(jobs.router)
        app.include_router(ui.router)
    app.include_router(ops.router)
    # Starlette puts the last added middleware outermost: ids wrap the body limit, so
    # a 413 from the limit carries X-Request-Id too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       on_refuse=lambda path, method: count_refused(svc, path, method, 413))
    app.add_middleware(RequestIdMiddleware)
    return app
