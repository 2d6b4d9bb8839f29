"""Pure ASGI middleware (no per-request task or body buffering): the one trusted proxy hop,
request id, metrics and the access line, and a deadline for receiving a request body."""

import asyncio
import logging
import re
import time
import uuid
from contextlib import suppress

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.metrics import Metrics

access = logging.getLogger("service.access")

REQUEST_ID_HEADER = b"x-request-id"
# The ASGI scope key where api/access.py puts the name of the request's valid API key (the
# scope, not request.state: the scope is this request's own, and this middleware sees it).
API_KEY_NAME = "service.api_key"
# Accept the proxy's id when it looks like one; never echo arbitrary client bytes into logs.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Metric labels stay bounded whatever clients send.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TrustedProxy:
    """The client, scheme and host as Caddy, the one trusted hop, saw them: the last value of
    X-Forwarded-For, -Proto and -Host (Caddy overwrites what clients send). Hypercorn's
    ProxyFixMiddleware(mode="legacy", trusted_hops=1) does the same, but deep-copies the
    whole scope on every request; a shallow copy is enough, as only top-level keys change."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            forwarded: dict[bytes, bytes] = {}
            for name, value in scope["headers"]:
                if name in _FORWARDED:  # ASGI header names are lower-case
                    forwarded[name] = value  # the last one Caddy set
            scope = dict(scope)
            if client := _last_hop(forwarded.get(b"x-forwarded-for")):
                scope["client"] = (client, 0)
            if scheme := _last_hop(forwarded.get(b"x-forwarded-proto")):
                scope["scheme"] = scheme
            if host := _last_hop(forwarded.get(b"x-forwarded-host")):
                headers = [(n, v) for n, v in scope["headers"] if n != b"host"]
                scope["headers"] = [*headers, (b"host", host.encode("latin-1"))]
        await self.app(scope, receive, send)


_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})


def _last_hop(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.rsplit(b",", 1)[-1].decode("latin-1").strip() or None


class RequestContextMiddleware:
    """The request id (Caddy's, or a new one) on the response and on every log line of the
    request; its metrics; and, with `access_log`, one access line when it ends (in place of
    Hypercorn's, which costs more: it copies every header and the environment)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = dict(scope["headers"])
        incoming = headers.get(REQUEST_ID_HEADER, b"")
        rid = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex.encode()
        token = request_id.set(rid.decode())
        status = 500
        sent = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid)]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "<unmatched>")
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            api_key = scope.get(API_KEY_NAME)
            self.metrics.requests_by_api_key.labels(api_key or "", str(status)).inc()
            if self.access_log:
                _log_access(scope, headers.get(b"user-agent"), status, sent, elapsed, api_key)
            request_id.reset(token)


def _log_access(
    scope: Scope,
    user_agent: bytes | None,
    status: int,
    sent: int,
    elapsed: float,
    api_key: str | None,
) -> None:
    """The access line: who (as the trusted proxy saw them, and the name of their API key,
    never the key), what, the answer, how long. Its request id comes from the log context,
    like every line of the request."""
    client = scope.get("client")
    fields = {
        "client": client[0] if client else None,
        "api_key": api_key,
        "method": scope["method"],
        "path": scope["path"],  # without the query string, as Hypercorn's line
        "status": status,
        "bytes": sent,
        "protocol": f"HTTP/{scope['http_version']}",
        "duration_us": round(elapsed * 1_000_000),
    }
    if user_agent is not None:
        fields["user_agent"] = user_agent.decode("latin-1")
    access.info("request", extra=fields)


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
