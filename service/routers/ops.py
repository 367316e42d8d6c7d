"""Operations: /v1/models, /healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from ..deps import Services, require_key, require_metrics_key, services
from ..errors import NotReady
from ..schemas import ErrorBody, Health, Limits, ModelOut, ModelsOut

router = APIRouter(tags=["operations"])


@router.get("/v1/models", response_model=ModelsOut, dependencies=[Depends(require_key)],
            responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def list_models(svc: Services = Depends(services)) -> ModelsOut:
    """Tasks served, with scale, steps, limits, backend and precision."""
    s = svc.settings
    out = []
    for m in svc.scheduler.served.values():
        limits = Limits(max_pixels=s.max_pixels, min_side=s.min_side,
                        max_body_bytes=s.max_body_bytes,
                        input_size=s.face_size if m.kind == "face" else None)
        out.append(ModelOut(task=m.task, model=m.name, family=m.family, kind=m.kind,
                            scale=m.scale, steps=m.steps, needs_mask=m.needs_mask,
                            latent_tile=m.latent_tile, input_multiple=m.input_multiple,
                            backend=m.backend, precision=m.precision, devices=list(s.devices),
                            limits=limits))
    return ModelsOut(models=out)


@router.get("/healthz", response_model=Health, response_model_exclude_none=True)
async def healthz() -> Health:
    """Alive: the event loop answers (inference never runs on it)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, response_model_exclude_none=True,
            responses={503: {"model": ErrorBody}})
async def readyz(svc: Services = Depends(services)) -> Health:
    """Ready: models loaded, one warm-up batch ran, every worker alive."""
    ready, detail = svc.scheduler.readiness()
    if not ready:
        raise NotReady(detail)
    return Health(status="ready", detail=detail)


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_metrics_key)],
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(svc: Services = Depends(services)) -> Response:
    """Prometheus text format."""
    # in a thread: with Redis, a scrape reads the queue gauges from it
    body = await run_in_threadpool(svc.metrics.render)
    return Response(body, media_type=svc.metrics.content_type)
