"""/v1/jobs: the same work, asynchronous (submit, poll, fetch, cancel)."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ..deps import Services, caller, require_key, services
from ..parsing import OPENAPI_BODY
from ..schemas import ErrorBody, JobOut, JobState
from .common import MEDIA_TYPES, Counted, result_headers, submit, validate_request

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_key)])
NOT_FOUND = {404: {"model": ErrorBody}, 401: {"model": ErrorBody}}


@router.post("/v1/jobs", status_code=202, response_model=JobOut, openapi_extra=OPENAPI_BODY,
             responses={code: {"model": ErrorBody}
                        for code in (400, 401, 413, 415, 422, 429, 503)})
async def create_job(request: Request, svc: Services = Depends(services),
                     owner: Optional[str] = Depends(caller)) -> JSONResponse:
    """Queue a restoration; poll GET /v1/jobs/{id}, then fetch /v1/jobs/{id}/result."""
    with Counted(svc, request) as counted:
        req = await validate_request(request, svc, counted,
                                     svc.settings.job_timeout_s)
        item = await submit(svc, request, req, svc.settings.job_timeout_s)
        job = svc.jobs.add(item, owner)
        counted.status = 202
        out = JobOut(id=job.id, status=JobState.queued, task=req.task, seed=req.seed)
        return JSONResponse(out.model_dump(mode="json", exclude_none=True), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}", "X-Seed": str(req.seed),
                                     "X-Model": req.model.name})


@router.get("/v1/jobs/{job_id}", response_model=JobOut, response_model_exclude_none=True,
            responses=NOT_FOUND)
async def get_job(job_id: str, svc: Services = Depends(services),
                  owner: Optional[str] = Depends(caller)) -> JobOut:
    """The job's state: queued, running, succeeded, failed or canceled (with the error)."""
    return svc.jobs.get(job_id, owner).describe()


@router.get("/v1/jobs/{job_id}/result", response_class=Response,
            responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}},
                       409: {"model": ErrorBody}, **NOT_FOUND})
async def get_result(job_id: str, svc: Services = Depends(services),
                     owner: Optional[str] = Depends(caller)) -> Response:
    """The restored image once the job succeeded (409 before that, 404 unknown id)."""
    job, body = svc.jobs.result(job_id, owner)
    req = job.item.request
    return Response(body, media_type=MEDIA_TYPES[req.output_format],
                    headers=result_headers(job.item, req))


@router.delete("/v1/jobs/{job_id}", response_model=JobOut, response_model_exclude_none=True,
               responses=NOT_FOUND)
async def cancel_job(job_id: str, svc: Services = Depends(services),
                     owner: Optional[str] = Depends(caller)) -> JobOut:
    """Cancel a queued or running job (its tiles leave the queue); a finished job is
    forgotten together with its result."""
    return svc.jobs.cancel(job_id, owner).describe()
