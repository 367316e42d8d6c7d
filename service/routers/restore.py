"""POST /v1/restore: the synchronous path (the image comes back in the response)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..deps import Services, require_key, services
from ..parsing import OPENAPI_BODY
from ..schemas import ErrorBody
from ..jobs import encoded
from .common import (MEDIA_TYPES, Counted, await_result, remaining_s, result_headers,
                     submit, validate_request)

router = APIRouter(tags=["restore"], dependencies=[Depends(require_key)])

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 413, 415, 422, 429, 503, 504)}


@router.post(
    "/v1/restore", openapi_extra=OPENAPI_BODY, response_class=Response,
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()},
                     "description": "the restored image, with X-Seed, X-Model, timings"},
               **ERRORS})
async def restore(request: Request, svc: Services = Depends(services)) -> Response:
    """Restore one image and return it (multipart form, or JSON with base64 fields)."""
    with Counted(svc, request) as counted:
        req = await validate_request(request, svc, counted,
                                     svc.settings.request_timeout_s)
        item = await submit(svc, request, req,
                            remaining_s(request, svc.settings.request_timeout_s))
        body = await encoded(await await_result(request, svc, item), req.output_format)
        counted.status = 200
        done = item.request      # a stored result (Redis replay) says its own seed and format
        return Response(body, media_type=MEDIA_TYPES[done.output_format],
                        headers=result_headers(item, done))
