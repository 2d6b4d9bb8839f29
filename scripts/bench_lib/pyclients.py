"""HTTP/3 against HTTP/2 with Python clients of equal cost (no native HTTP/3 generator exists here).

Both are sans-I/O protocol stacks driven the same way on one asyncio loop: one connection,
`concurrency` streams kept in flight, certificates verified against Caddy's internal root. The
client's own CPU is the limit, so these figures compare protocols, labelled client-bound; they
are not the stack's capacity.
"""

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from bench_lib.model import RunResult, percentiles
from bench_lib.scenarios import authorization

Get = Callable[[str], Awaitable[int]]


def _headers(authority: str, path: str, api_key: str | None) -> list[tuple[bytes, bytes]]:
    auth = [(b"authorization", authorization(api_key).encode())] if api_key else []
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"user-agent", b"scripts/bench"),
        *auth,
    ]


def _fail(pending: dict[int, asyncio.Future[int]], reason: str) -> None:
    """Requests still waiting when their connection ends fail (a worker may have given up)."""
    for waiter in pending.values():
        if not waiter.done():
            waiter.set_exception(ConnectionError(reason))
    pending.clear()


class _H2:
    """One HTTP/2 connection (h2 over asyncio TLS streams)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authority: str,
        api_key: str | None,
    ):
        self.reader, self.writer, self.authority = reader, writer, authority
        self.api_key = api_key
        self.http = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.pending: dict[int, asyncio.Future[int]] = {}
        self.status: dict[int, int] = {}
        self.http.initiate_connection()
        self.writer.write(self.http.data_to_send())
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.http.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.status[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.http.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    self.pending.pop(event.stream_id).set_result(self.status.pop(event.stream_id))
                elif isinstance(event, h2.events.StreamReset):
                    self.pending.pop(event.stream_id).set_exception(ConnectionError("reset"))
            self.writer.write(self.http.data_to_send())
        _fail(self.pending, "connection closed")

    async def get(self, path: str) -> int:
        stream_id = self.http.get_next_available_stream_id()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = waiter
        headers = _headers(self.authority, path, self.api_key)
        self.http.send_headers(stream_id, headers, end_stream=True)
        self.writer.write(self.http.data_to_send())
        return await waiter

    async def close(self) -> None:
        self.http.close_connection()
        self.writer.write(self.http.data_to_send())
        self.writer.close()
        self.reading.cancel()


class _H3(QuicConnectionProtocol):
    """One HTTP/3 connection (aioquic)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.authority = ""
        self.api_key: str | None = None
        self.pending: dict[int, asyncio.Future[int]] = {}
        self.status: dict[int, int] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.http.handle_event(event):
            stream_id = getattr(h3_event, "stream_id", None)
            if stream_id not in self.pending:
                continue
            if isinstance(h3_event, HeadersReceived):
                self.status[stream_id] = int(dict(h3_event.headers)[b":status"])
            if isinstance(h3_event, HeadersReceived | DataReceived) and h3_event.stream_ended:
                self.pending.pop(stream_id).set_result(self.status.pop(stream_id, 0))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        _fail(self.pending, "connection lost")

    async def get(self, path: str) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = waiter
        headers = _headers(self.authority, path, self.api_key)
        self.http.send_headers(stream_id, headers, end_stream=True)
        self.transmit()
        return await waiter


async def _closed_loop(
    get: Get, paths: list[str], concurrency: int, duration: float
) -> tuple[int, int, list[float], float]:
    """`concurrency` workers, each sending its next request as soon as the last one answers."""
    samples: list[float] = []
    failed = 0
    started = time.monotonic()
    deadline = started + duration

    async def worker(offset: int) -> None:
        nonlocal failed
        turn = offset
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                status = await asyncio.wait_for(get(paths[turn % len(paths)]), 10)
            except (TimeoutError, ConnectionError):
                status = 0
            samples.append((time.perf_counter() - sent) * 1e6)
            failed += not 200 <= status < 300  # a 401 or a redirect is no answer here
            turn += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return len(samples), failed, samples, time.monotonic() - started


def _result(requests: int, failed: int, samples: list[float], wall: float, cpu: float) -> RunResult:
    return RunResult(
        requests=requests,
        failed=failed,
        duration_s=wall,
        latency_ms=percentiles(samples),
        generator_cpu=cpu / wall,
        generator_threads=1,
        client_bound=True,
    )


async def _run_h2(
    host: str,
    port: int,
    ca_file: str,
    paths: list[str],
    api_key: str | None,
    concurrency: int,
    duration: float,
) -> RunResult:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=host
    )
    if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        raise RuntimeError("the server did not negotiate HTTP/2")
    client = _H2(reader, writer, f"{host}:{port}", api_key)
    try:
        cpu = time.process_time()
        requests, failed, samples, wall = await _closed_loop(
            client.get, paths, concurrency, duration
        )
        return _result(requests, failed, samples, wall, time.process_time() - cpu)
    finally:
        await client.close()


async def _run_h3(
    host: str,
    port: int,
    ca_file: str,
    paths: list[str],
    api_key: str | None,
    concurrency: int,
    duration: float,
) -> RunResult:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=host)
    configuration.load_verify_locations(ca_file)
    async with connect(
        "127.0.0.1", port, configuration=configuration, create_protocol=_H3
    ) as client:
        assert isinstance(client, _H3)
        client.authority = f"{host}:{port}"
        client.api_key = api_key
        cpu = time.process_time()
        requests, failed, samples, wall = await _closed_loop(
            client.get, paths, concurrency, duration
        )
        return _result(requests, failed, samples, wall, time.process_time() - cpu)


def run(
    protocol: str,
    host: str,
    port: int,
    ca_file: str,
    paths: list[str],
    api_key: str | None,
    concurrency: int,
    duration: float,
) -> RunResult:
    """One closed-loop run over h2 or h3 to 127.0.0.1:port (the stack publishes on loopback),
    every request with `Authorization: Bearer <api_key>` (none when None)."""
    runner = {"h2": _run_h2, "h3": _run_h3}[protocol]
    return asyncio.run(runner(host, port, ca_file, paths, api_key, concurrency, duration))
