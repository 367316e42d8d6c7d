"""Pure ASGI middleware: request ids on every response, and the body-size limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streaming, disconnect detection and
background work behave exactly as without middleware.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Callable, Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyTooLarge, error_response

REQUEST_ID = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


class RequestIdMiddleware:
    """Echo a well-formed client X-Request-Id (else make one) on every response, and keep
    it (and the arrival time) in ``scope["state"]`` for handlers and logs."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID.encode(), b"").decode("latin-1")
        request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["arrived"] = time.monotonic()

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != REQUEST_ID.encode()]
                headers.append((REQUEST_ID.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Unexpected errors still answer in the API's JSON shape, with the id that
            # finds them in the logs (Starlette's own 500 page would bypass both).
            if started:
                raise
            await error_response(exc)(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``, before the application parses anything.

    A declared Content-Length over the limit is refused without reading; otherwise the
    body is read (at most ``max_bytes``) and replayed to the app. After the replay,
    ``receive`` is the server's again, so handlers still see ``http.disconnect``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 on_refuse: Optional[Callable[[str, str], None]] = None):
        self.app = app
        self.max_bytes = max_bytes
        self.on_refuse = on_refuse       # (path, method): counts the refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_refuse is not None:
            self.on_refuse(scope.get("path", ""), scope.get("method", ""))
        response = error_response(BodyTooLarge(
            f"the request body is over the limit of {self.max_bytes} bytes "
            "(RESSHIFT_MAX_BODY_BYTES); send a smaller image", code="body_too_large"),
            headers={"Connection": "close"})
        await response(scope, receive, send)
