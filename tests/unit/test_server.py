"""The real `python -m service.server` in a subprocess, on a free loopback port, against the
test Postgres: what clients see on their connections around SIGTERM.
"""

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx

from service.server import ListeningLoop
from tests.project import ROOT
from tests.unit.conftest import make_key

LAME_DUCK = 1.5
GRACEFUL_TIMEOUT = 2
START_TIMEOUT = 20.0
# Hypercorn's own logs, the lame duck's and the lifespan's, in the order a shutdown logs them.
SHUTDOWN_LINES = (
    "lame duck: started",
    "lame duck: ended",
    "shutdown: cancelling background tasks",
    "shutdown complete",
)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def connection(self) -> str | None:
        return self.headers.get("connection")


class Connection:
    """One HTTP/1.1 connection, held open by the test (no pool decides when it is reused)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.key = key

    async def request(self, method: str, path: str, payload: object = None) -> Response:
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        if self.key:
            head += f"Authorization: Bearer {self.key}\r\n"
        self.writer.write(f"{head}\r\n".encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        assert status_line, "the server closed the connection instead of answering"
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        # A response to HEAD has the headers of GET's, its Content-Length too, but no body.
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        content = await self.reader.readexactly(length)
        return Response(int(status_line.split()[1]), headers, content)

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(2):
            return await self.reader.read(1) == b""


@asynccontextmanager
async def connect(port: int, key: str = "") -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Connection(reader, writer, key)
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


class Server:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.key = ""  # an API key, once the server has migrated its database
        self.log: list[dict[str, Any]] = []

    async def collect_log(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            try:
                self.log.append(json.loads(raw))
            except ValueError:  # a traceback, or anything else not ours
                self.log.append({"message": raw.decode(errors="replace").rstrip()})

    def messages(self) -> list[str]:
        return [str(line["message"]) for line in self.log]

    def line(self, message: str) -> dict[str, Any]:
        return next(line for line in self.log if line["message"] == message)

    def signal(self, signum: signal.Signals) -> float:
        """Sends the signal; returns when, on the monotonic clock."""
        self.process.send_signal(signum)
        return time.monotonic()

    async def logged(self, message: str) -> None:
        async with asyncio.timeout(5):
            while message not in self.messages():
                await asyncio.sleep(0.01)

    async def wait_ready(self) -> None:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                assert self.process.returncode is None, self.messages()
                with suppress(ConnectionRefusedError):
                    async with connect(self.port) as connection:
                        if (await connection.request("GET", "/readyz")).status == 200:
                            return
                await asyncio.sleep(0.05)

    async def refused(self) -> float:
        """Waits until a connection is refused; returns when, on the monotonic clock."""
        async with asyncio.timeout(10):
            while True:
                try:
                    async with connect(self.port):
                        pass
                # Reset: the listener closed while this connection was in its backlog.
                except (ConnectionRefusedError, ConnectionResetError):
                    return time.monotonic()
                await asyncio.sleep(0.02)

    async def exit_code(self) -> int:
        async with asyncio.timeout(15):
            return await self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def launched(**settings: object) -> AsyncIterator[Server]:
    """The server as the image runs it, with APP_* settings from the arguments only."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("APP_")}
    env |= {f"APP_{name.upper()}": str(value) for name, value in settings.items()}
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "service.server", "--bind", f"127.0.0.1:{port}"),
        *("--graceful-timeout", str(GRACEFUL_TIMEOUT)),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    server = Server(process, port)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(server.collect_log())
            try:
                yield server
            finally:
                # Whatever the test did, the process ends here, and with it the log.
                if process.returncode is None:
                    process.kill()
    finally:
        await process.wait()


@asynccontextmanager
async def serving(database_url: str, lame_duck: float) -> AsyncIterator[Server]:
    async with launched(database_url=database_url, lame_duck_seconds=lame_duck) as server:
        await server.wait_ready()
        server.key = await make_key(database_url)
        yield server


async def test_head_on_the_probes_answers_as_get_without_a_body(database_url: str) -> None:
    async with serving(database_url, LAME_DUCK) as server, connect(server.port) as connection:
        for path in ("/healthz", "/readyz"):
            got = await connection.request("GET", path)
            head = await connection.request("HEAD", path)
            assert head.status == got.status == 200, path
            assert head.headers["content-length"] == got.headers["content-length"]
        # Had a body followed a HEAD response, this would read it as the next status line.
        assert (await connection.request("GET", "/healthz")).status == 200


async def test_sigterm_closes_the_listener_and_serves_open_connections_closing(
    database_url: str,
) -> None:
    async with (
        serving(database_url, LAME_DUCK) as server,
        connect(server.port, server.key) as idle,
        connect(server.port) as other,
        httpx.AsyncClient(http1=False, http2=True) as h2,
    ):
        assert (await idle.request("GET", "/healthz")).connection is None
        h2_url = f"http://127.0.0.1:{server.port}/healthz"
        assert (await h2.get(h2_url)).http_version == "HTTP/2"
        sent = server.signal(signal.SIGTERM)
        await server.logged("lame duck: started")

        # The listener is closed at once: a new connection is refused (Caddy retries that on
        # another replica, for any method, since nothing was sent).
        assert await server.refused() - sent < 0.5, "the listener must close at once"

        # Connections opened before SIGTERM stay open and are answered, each told to close.
        ready = await other.request("GET", "/readyz")
        assert (ready.status, ready.connection) == (503, "close"), "readiness turns at once"
        assert await other.closed_by_server()
        created = await idle.request("POST", "/items", {"name": "duck", "price_cents": 1})
        assert (created.status, created.connection) == (201, "close")
        assert await idle.closed_by_server()

        # HTTP/2 (h2c) keeps working, without the header (which HTTP/2 forbids; the h2
        # library would strip it, so test_draining.py checks that the middleware omits it).
        response = await h2.get(h2_url)
        assert (response.http_version, response.status_code) == ("HTTP/2", 200)
        assert "connection" not in response.headers
        assert time.monotonic() - sent < LAME_DUCK, "the checks above must run in the lame duck"

        assert await server.exit_code() == 0
        assert time.monotonic() - sent > LAME_DUCK - 0.1, "the lame duck was cut short"
    messages = server.messages()
    assert [message for message in messages if message in SHUTDOWN_LINES] == list(SHUTDOWN_LINES)
    assert server.line("lame duck: started")["signal"] == "SIGTERM"
    assert server.line("lame duck: ended")["cut_short_by"] is None


async def test_without_a_signal_no_response_asks_to_close(database_url: str) -> None:
    async with serving(database_url, 0.2) as server:
        async with connect(server.port, server.key) as connection:
            for method, path, payload in (
                ("GET", "/healthz", None),
                ("GET", "/readyz", None),
                ("POST", "/items", {"name": "quiet", "price_cents": 1}),
                ("POST", "/items", {"name": "quiet", "price_cents": 1}),  # 409
                ("GET", "/no-such-route", None),
                ("PATCH", "/items/424242", {"price_cents": 2}),  # 404
            ):
                response = await connection.request(method, path, payload)
                assert response.connection is None, (method, path, response)
        server.signal(signal.SIGINT)
        assert await server.exit_code() == 0
    assert server.line("lame duck: started")["signal"] == "SIGINT"
    assert "shutdown complete" in server.messages()


async def test_a_second_sigterm_ends_the_lame_duck_early(database_url: str) -> None:
    async with serving(database_url, 60) as server:
        sent = server.signal(signal.SIGTERM)
        await server.logged("lame duck: started")
        server.signal(signal.SIGTERM)
        assert await server.exit_code() == 0
        assert time.monotonic() - sent < 2
    assert server.line("lame duck: ended")["cut_short_by"] == "SIGTERM"
    assert "shutdown complete" in server.messages()


async def test_a_failed_lifespan_exits_non_zero() -> None:
    async with launched(
        database_url="postgresql://app@127.0.0.1:9/app",  # discard port: always refused
        db_startup_deadline=0.5,
    ) as server:
        assert await server.exit_code() != 0
    assert "lame duck: started" not in server.messages()


def test_connections_waiting_in_the_backlog_are_answered_when_the_listener_closes() -> None:
    """The lame duck closes the listener on the loop Hypercorn's servers run on. Connections
    the kernel completed before that, whose requests are sent (as Caddy's are), are answered,
    not reset; the next connection is refused."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"answered\n")
        await writer.drain()
        writer.close()

    def read(client: socket.socket) -> bytes:
        with client:
            try:
                return client.recv(100)
            except ConnectionResetError:
                return b"reset"

    async def scenario() -> tuple[list[bytes], bool]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ListeningLoop)
        # asyncio.start_server is what Hypercorn's serve() calls.
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # This coroutine holds the loop, so no accept runs: they wait in the backlog.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for client in clients:
            client.sendall(b"request\n")
        await loop.stop_listening()
        answers = await asyncio.gather(*(asyncio.to_thread(read, c) for c in clients))
        try:
            socket.create_connection(("127.0.0.1", port)).close()
        except ConnectionRefusedError:
            return answers, True
        return answers, False

    with asyncio.Runner(loop_factory=ListeningLoop) as runner:
        answers, refused = runner.run(scenario())
    assert answers == [b"answered\n"] * 3
    assert refused
