"""Pure ASGI middleware (no per-request task or body buffering): request id and metrics, and a
deadline for receiving a request body."""

import asyncio
import re
import time
import uuid
from contextlib import suppress

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
# Accept the proxy's id when it looks like one; never echo arbitrary client bytes into logs.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Metric labels stay bounded whatever clients send.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        rid = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex.encode()
        token = request_id.set(rid.decode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "<unmatched>")
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
            request_id.reset(token)


class RequestBodyGuard:
    """The request body's lifecycle, which neither Caddy nor Hypercorn guards:

    - it must arrive within `seconds` of the request's start, or the request is answered 408
      and its connection closed. Caddy's read_body timeout does not bound a body that it
      streams to the app (every read resets it), so a client trickling a byte a second would
      hold a connection for ever. The 408 is raised from `receive`, where FastAPI reads the
      body, so the app's error handlers answer it (problem details);
    - it is read to its end before the response ends, even when the app never looked at it
      (a 404 or 405). Hypercorn closes a connection whose request body is unfinished when the
      response ends, without a `Connection: close`; Caddy would then send the next request on
      that dead connection and answer a non-idempotent one with 502.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_received = False

        async def receive_in_time() -> Message:
            nonlocal body_received
            if body_received:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, "the request body did not arrive in time", {"Connection": "close"}
                ) from None
            body_received = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def send_after_body(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                # Past the deadline Hypercorn closes the connection, as it should.
                with suppress(HTTPException):
                    while not body_received:
                        await receive_in_time()
            await send(message)

        await self.app(scope, receive_in_time, send_after_body)
