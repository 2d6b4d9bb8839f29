"""The draining state, and the middleware that tells HTTP/1.1 clients about it.

One `Draining` per app: the shutdown trigger (service/server.py) starts it on SIGTERM,
readiness answers 503 while it is started, and `CloseWhileDraining` puts `Connection: close`
on every HTTP/1.1 response from then on, so that a client (Caddy) never writes its next
request onto a connection the server is about to close.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Draining:
    """Set once, never cleared: the process is on its way out."""

    def __init__(self) -> None:
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        self._started = True


_CONNECTION = b"connection"
_CLOSE = (_CONNECTION, b"close")


class CloseWhileDraining:
    """Adds `Connection: close` to HTTP/1.x responses that start while draining.

    Decided when the response starts, not when the request arrived: a long-poll that began
    before SIGTERM must close its connection too. HTTP/2 and HTTP/3 forbid the header (their
    server sends GOAWAY instead) and pass untouched. While not draining, an HTTP/1.1 response
    costs one wrapper call and a flag test per message.
    """

    def __init__(self, app: ASGIApp, draining: Draining) -> None:
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["http_version"].startswith("1."):
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.draining.started:
                headers = [h for h in message.get("headers", []) if h[0].lower() != _CONNECTION]
                message["headers"] = [*headers, _CLOSE]
            await send(message)

        await self.app(scope, receive, send_closing)
