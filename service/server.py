"""The server the image runs: Hypercorn on uvloop, with a lame duck before its shutdown.

    python -m service.server [--config hypercorn.toml] [--graceful-timeout S] [--bind ADDR]

hypercorn.toml is read with Hypercorn's own loader; the flags override it (compose.yaml
passes --graceful-timeout). On SIGTERM or SIGINT the app drains at once: the listener closes
(a new connection is refused, which Caddy retries on another replica, whatever the method),
readiness answers 503, and every HTTP/1.1 response on the connections already open carries
`Connection: close`. That lasts APP_LAME_DUCK_SECONDS (a second signal ends it early): longer
than Caddy's upstream keep-alive, so that by then Caddy has closed every connection it left
idle. Then Hypercorn's own graceful shutdown runs: in-flight requests are given
graceful_timeout, the lifespan shutdown shutdown_timeout. Exit 0 when clean; an exception (a
failed lifespan) ends the process with its traceback and exit status 1.

Why: Hypercorn alone closes idle keep-alive connections the moment SIGTERM arrives and
closes a connection after an in-flight response without saying so, so Caddy may write a
request onto a connection that is closing; a POST with a body cannot be retried (502). And the
listener closes first, not last: during the lame duck every response closes its connection, so
Caddy would dial this replica for each request. Closing a listener resets the connections in
its backlog, after Caddy has sent a request on them: the lame duck accepts those first and
serves them (ListeningLoop.stop_listening).

`hypercorn.asyncio.serve` runs the app in this process on the running loop: hypercorn.toml's
`workers` and `worker_class` are for the hypercorn CLI (compose.dev.yaml). This is always
one process on uvloop, which is what `workers = 0` and `worker_class = "uvloop"` say.
"""

import argparse
import asyncio
import logging
import os
import signal
import socket
import warnings
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from ssl import SSLContext
from typing import Any, cast

import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

from service.draining import Draining
from service.main import create_app
from service.settings import Settings

# Not __name__: run with -m, this module is __main__.
log = logging.getLogger("service.server")

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Listener:
    server: asyncio.AbstractServer
    protocol_factory: Callable[[], asyncio.BaseProtocol]
    ssl: SSLContext | None

    def accept_waiting(self) -> list[socket.socket]:
        """The connections the kernel has completed that the loop has not accepted yet."""
        waiting = []
        # uvloop's Server is no asyncio.Server, but has its `sockets`.
        for listening in cast(asyncio.Server, self.server).sockets:
            # A second descriptor of the same socket: closing it leaves the server's open.
            with socket.socket(fileno=os.dup(listening.fileno())) as duplicate:
                duplicate.setblocking(False)
                with suppress(BlockingIOError):
                    while True:
                        connection, _ = duplicate.accept()
                        connection.setblocking(False)
                        waiting.append(connection)
        return waiting


class ListeningLoop(uvloop.Loop):
    """uvloop, keeping the servers Hypercorn creates, so the lame duck can close listeners
    (Hypercorn's serve() keeps them to itself until its graceful shutdown)."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Listener] = []

    # Typed as a pass-through: the overloads of AbstractEventLoop.create_server stay the API.
    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        server: asyncio.AbstractServer = await super().create_server(
            protocol_factory, *args, **kwargs
        )
        self.listeners.append(Listener(server, protocol_factory, kwargs.get("ssl")))
        return server

    async def stop_listening(self) -> None:
        """Closes every listener, after taking in the connections waiting in its backlog:
        closing a listening socket resets those, and Caddy, which has already sent a request
        on such a connection, can send it again elsewhere only if it is a read or a keyed
        write (a bare POST got a 502). Between the last accept and the close no other code
        runs, so a connection completed in that moment is the only one still reset."""
        for listener in self.listeners:
            waiting = listener.accept_waiting()
            listener.server.close()  # the listener only: open connections stay
            for connection in waiting:
                await self.connect_accepted_socket(
                    listener.protocol_factory, connection, ssl=listener.ssl
                )


async def lame_duck(
    signals: asyncio.Queue[signal.Signals], draining: Draining, seconds: float, loop: ListeningLoop
) -> None:
    """Hypercorn's shutdown trigger: returns when its graceful shutdown should begin."""
    first = await signals.get()
    draining.start()  # open connections are told to close
    await loop.stop_listening()
    log.info("lame duck: started", extra={"signal": first.name, "seconds": seconds})
    second: signal.Signals | None = None
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            second = await signals.get()
    log.info("lame duck: ended", extra={"cut_short_by": second.name if second else None})


async def run(config: Config, settings: Settings) -> None:
    draining = Draining()
    app = create_app(settings, draining=draining)
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ListeningLoop), "main() runs the server on a ListeningLoop"
    # Installed before the lifespan starts, so a signal during start-up is kept for the
    # trigger instead of killing the process; once it has returned, later signals are ignored,
    # as Hypercorn ignores them during its graceful shutdown.
    for signum in SHUTDOWN_SIGNALS:
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    trigger = partial(lame_duck, signals, draining, settings.lame_duck_seconds, loop)
    # Hypercorn types ASGI apps with its own (equivalent) protocol types.
    await serve(app, config, shutdown_trigger=trigger, mode="asgi")  # type: ignore[arg-type]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.server", description="Hypercorn with a lame duck on SIGTERM."
    )
    parser.add_argument("--config", default="hypercorn.toml", help="Hypercorn's TOML file")
    parser.add_argument(
        "--graceful-timeout", type=float, help="overrides the file's graceful_timeout (seconds)"
    )
    parser.add_argument(
        "--bind", action="append", help="overrides the file's bind (host:port; repeatable)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = Config.from_toml(args.config)
    if args.graceful_timeout is not None:
        config.graceful_timeout = args.graceful_timeout
    if args.bind:
        config.bind = args.bind
    # serve() warns that `workers` has no effect; the file's workers = 0 means this process.
    warnings.filterwarnings("ignore", "The config `workers` has no affect", Warning)
    with asyncio.Runner(loop_factory=ListeningLoop) as runner:
        runner.run(run(config, Settings()))


if __name__ == "__main__":
    main()
