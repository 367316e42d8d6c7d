"""Dependencies declared once: the app's services, API-key checks, readiness."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Optional

from fastapi import Depends, Request

from .errors import Unauthorized
from .jobs import JobStore
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import Settings


@dataclass
class Services:
    """Everything a handler may use; built by ``create_app``, kept in ``app.state``."""

    settings: Settings
    metrics: Metrics
    scheduler: Scheduler
    jobs: JobStore


def services(request: Request) -> Services:
    return request.app.state.services


def _key_ok(header: str, keys: list[bytes]) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = token.strip().encode()
    ok = False
    for key in keys:           # compare with every key: the time says nothing about which
        ok |= hmac.compare_digest(given, key)
    return ok


def check_key(request: Request, svc: Services) -> None:
    keys = svc.settings.key_values()
    if keys and not _key_ok(request.headers.get("authorization", ""), keys):
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")


def require_key(request: Request, svc: Services = Depends(services)) -> None:
    check_key(request, svc)


def caller(request: Request, svc: Services = Depends(services)) -> Optional[str]:
    """Who is asking, for what belongs to a caller (jobs): a digest of the API key when
    keys are configured (checked by ``require_key``), else None (an open service)."""
    if not svc.settings.key_values():
        return None
    _, _, token = request.headers.get("authorization", "").partition(" ")
    return hashlib.sha256(token.strip().encode()).hexdigest()


def require_metrics_key(request: Request, svc: Services = Depends(services)) -> None:
    if svc.settings.metrics_auth:
        check_key(request, svc)


def require_ready(svc: Services = Depends(services)) -> None:
    error = svc.scheduler.unavailable()
    if error is not None:
        raise error
