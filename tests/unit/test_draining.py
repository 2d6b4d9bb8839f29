"""CloseWhileDraining in-process, on a bare ASGI app: the cases a real server makes hard to
time (a response that starts after draining began) or to send (HTTP/2 scopes)."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.draining import CloseWhileDraining, Draining

Headers = list[tuple[bytes, bytes]]


def responding(headers: Headers, before: Callable[[], Awaitable[None]] | None = None) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if before is not None:
            await before()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


async def response_headers(app: ASGIApp, draining: Draining, http_version: str = "1.1") -> Headers:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "http_version": http_version, "headers": []}
    await CloseWhileDraining(app, draining)(scope, receive, send)
    headers: Headers = sent[0]["headers"]
    return headers


async def test_a_request_in_flight_when_draining_starts_closes_its_connection() -> None:
    draining = Draining()
    started = asyncio.Event()
    release = asyncio.Event()

    async def long_poll() -> None:
        started.set()
        await release.wait()

    request = asyncio.create_task(response_headers(responding([], long_poll), draining))
    await started.wait()
    draining.start()
    release.set()
    assert await request == [(b"connection", b"close")]


@pytest.mark.parametrize("http_version", ["2", "3"])
async def test_http2_and_http3_responses_never_carry_connection(http_version: str) -> None:
    draining = Draining()
    draining.start()
    assert await response_headers(responding([]), draining, http_version) == []


async def test_an_existing_connection_header_is_replaced_not_repeated() -> None:
    draining = Draining()
    draining.start()
    app = responding([(b"Connection", b"keep-alive"), (b"x-request-id", b"1")])
    assert await response_headers(app, draining) == [
        (b"x-request-id", b"1"),
        (b"connection", b"close"),
    ]
