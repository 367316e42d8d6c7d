"""Typed errors of the service and the one place they become HTTP responses.

Handlers, validation and the scheduler raise these (or the model layer's
``InputImageError`` / ``ImageTooLargeError``); ``error_response`` turns any exception
into ``{"error": {"code", "message"}}`` with the status from ``_STATUS``. Nothing else
in the service picks a status code for an error.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from model.errors import ImageTooLargeError, InputImageError, ModelError

log = logging.getLogger("resshift.service")


class ServiceError(Exception):
    """Base of the service's typed errors; ``str(exc)`` says what to fix."""

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code_override = code


# -- bad requests (400/413/415/422) -----------------------------------------------------
class MalformedRequest(ServiceError):
    """The body cannot be parsed: broken JSON, bad base64, broken multipart."""


class UnsupportedMediaType(ServiceError):
    """Neither multipart/form-data nor application/json."""


class BodyTooLarge(ServiceError):
    """The request body is over RESSHIFT_MAX_BODY_BYTES."""


class TooMuchWork(ServiceError):
    """The request's estimated device time is over its deadline (priced from the header)."""


class InvalidField(ServiceError):
    """A field is missing or has a value outside its range."""


class UnknownTask(ServiceError):
    """The task is not among the served ones."""


class MaskRequired(ServiceError):
    """An inpainting task without a mask."""


class MaskNotSupported(ServiceError):
    """A mask sent to a task that does not use one."""


class MaskSizeMismatch(ServiceError):
    """The mask's size differs from the image's."""


class FaceInputSize(ServiceError):
    """The face task takes aligned faces of one size only."""


# -- access, load, time --------------------------------------------------------------------
class Unauthorized(ServiceError):
    """No valid API key while keys are configured."""


class QueueFull(ServiceError):
    """Too many admitted, unfinished requests; retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    """Models are still loading / warming up, or failed to load."""


class DevicePoisoned(NotReady):
    """The worker's GPU met a sticky CUDA error (``service.cuda_errors``): its context is
    unusable until the process restarts. 503, not 500: the request was fine."""


class ShuttingDown(ServiceError):
    """The server is stopping and takes no new work."""


class DeadlineExceeded(ServiceError):
    """The request ran past its deadline; its tiles were dropped."""


class Canceled(ServiceError):
    """The client canceled the work (DELETE, or it disconnected)."""


class JobNotFound(ServiceError):
    """No job with that id (never existed, or expired)."""


class JobNotFinished(ServiceError):
    """The job is still queued or running."""


class JobNotSucceeded(ServiceError):
    """The job failed or was canceled; it has no result."""


class InferenceFailed(ServiceError):
    """The worker hit an unexpected error on this request (the worker lives on)."""


class RemoteError(ServiceError):
    """A job failed in a worker process (Redis mode). It carries the status and code the
    worker's own typed error had, so a client sees what the embedded mode would give."""

    def __init__(self, message: str, status: int = 500, code: str = "inference_failed"):
        super().__init__(message, code=code)
        self.status = status


# The one mapping: error type -> (HTTP status, error code). Looked up along the MRO, so
# a subclass inherits its parent's row unless it has its own.
_STATUS: dict[type, tuple[int, str]] = {
    MalformedRequest: (400, "malformed_request"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    BodyTooLarge: (413, "body_too_large"),
    ImageTooLargeError: (413, "image_too_large"),
    TooMuchWork: (413, "too_much_work"),
    InputImageError: (422, "invalid_image"),
    InvalidField: (422, "invalid_field"),
    UnknownTask: (422, "unknown_task"),
    MaskRequired: (422, "mask_required"),
    MaskNotSupported: (422, "mask_not_supported"),
    MaskSizeMismatch: (422, "mask_size_mismatch"),
    FaceInputSize: (422, "face_input_size"),
    RequestValidationError: (422, "invalid_request"),
    Unauthorized: (401, "unauthorized"),
    JobNotFound: (404, "job_not_found"),
    JobNotFinished: (409, "job_not_finished"),
    JobNotSucceeded: (409, "job_not_succeeded"),
    QueueFull: (429, "queue_full"),
    Canceled: (499, "canceled"),
    NotReady: (503, "not_ready"),
    DevicePoisoned: (503, "device_failed"),
    ShuttingDown: (503, "shutting_down"),
    DeadlineExceeded: (504, "deadline_exceeded"),
    InferenceFailed: (500, "inference_failed"),
    ModelError: (500, "model_error"),
}


# Starlette's own refusals (routing, form parsing) in the API's codes (docs/service.md)
_HTTP_CODES = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed",
               413: "body_too_large", 415: "unsupported_media_type"}


def status_and_code(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) for any exception; unknown ones are 500."""
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, _HTTP_CODES.get(
            exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_request")
    if isinstance(exc, RemoteError):
        return exc.status, exc.code_override or "inference_failed"
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            status, code = _STATUS[cls]
            override = getattr(exc, "code_override", None)
            return status, override or code
    return 500, "internal_error"


def _message(exc: BaseException, status: int) -> str:
    if isinstance(exc, RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
        return "; ".join(parts) or "the request does not match the API schema"
    if isinstance(exc, StarletteHTTPException):
        return clip(str(exc.detail))
    if status == 500 and not isinstance(exc, (ServiceError, ModelError)):
        return "internal error; the request id in X-Request-Id identifies it in the logs"
    return clip(str(exc) or type(exc).__name__, 1000)


def clip(text: str, limit: int = 64) -> str:
    """At most ``limit`` characters of ``text`` (what a client sent, quoted back)."""
    return text if len(text) <= limit else text[:limit] + "..."


def error_response(exc: BaseException, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    """The JSON error response for ``exc`` (status, code, message, extra headers)."""
    status, code = status_and_code(exc)
    if status >= 500 and status not in (503, 504):
        log.error("request failed: %s", exc, exc_info=exc)
    out = dict(headers or {})
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        out.update(exc.headers)          # e.g. Allow on 405
    if isinstance(exc, QueueFull):
        out["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, NotReady) or (isinstance(exc, RemoteError) and status in (429, 503)):
        out.setdefault("Retry-After", "5")
    if isinstance(exc, Unauthorized):
        out["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": {"code": code, "message": _message(exc, status)}},
                        status_code=status, headers=out)
