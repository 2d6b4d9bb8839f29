"""Slow and idle clients: Caddy's timeouts cut them off, idle connections starve nobody, and a
client that vanishes mid-request leaves no database connection or transaction behind."""

import select
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from stack_facts import eventually
from tests.integration.abuse import (
    app_connection_bound,
    app_connections,
    app_metric,
    read_until_closed,
    statuses,
    with_key,
)
from tests.integration.stack import Stack

# caddy/Caddyfile: timeouts { read_header 10s }. The clients below keep dribbling far longer,
# so only the server's timeout can end their requests.
DRIBBLE_SECONDS = 40


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


def in_parallel(*checks: Callable[[], None]) -> None:
    """Runs blocking checks side by side (they mostly wait) and re-raises the first failure."""
    failures: list[BaseException] = []

    def run(check: Callable[[], None]) -> None:
        try:
            check()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(check,)) for check in checks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def dribble(stack: Stack, head: bytes, drip: bytes) -> tuple[bytes, bool]:
    """Sends `head`, then `drip` one byte a second; returns what came back and whether the
    server ended the exchange while the client was still sending."""
    with stack.tls_connect() as connection:
        connection.sendall(head)
        deadline = time.monotonic() + DRIBBLE_SECONDS
        for byte in drip:
            if time.monotonic() > deadline:
                return b"", False
            readable, _, _ = select.select([connection], [], [], 1)
            if readable:
                connection.setblocking(False)
                try:
                    answer = connection.recv(65536)
                except ssl.SSLWantReadError:  # TLS housekeeping (a session ticket) only
                    answer = None
                connection.settimeout(10)
                if answer is not None:  # the server answered or closed: it stopped waiting
                    return answer + read_until_closed(connection), True
            try:
                connection.sendall(bytes([byte]))
            except OSError:  # closed without an answer
                return read_until_closed(connection), True
        return b"", False


def test_slow_headers_and_a_silent_connection_are_cut_off(stack: Stack) -> None:
    def slow_headers() -> None:
        # Slowloris: a header line one byte a second, never finished.
        received, cut = dribble(
            stack, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n", b"X-Slow: " + b"a" * 200
        )
        assert cut, "the request head was still being read after the header timeout"
        assert statuses(received) == []  # Go's server just closes the connection

    def silent_connection() -> None:
        # Connects and never starts TLS: the handshake is held to the header timeout too.
        with socket.create_connection(("127.0.0.1", stack.https_port), timeout=40) as silent:
            assert silent.recv(1) == b""

    in_parallel(slow_headers, silent_connection)


def test_a_slow_request_body_is_cut_off_with_408(stack: Stack) -> None:
    # Caddy's read_body timeout does not bound a body it streams to the app; the app's
    # request-body deadline (APP_REQUEST_BODY_TIMEOUT, short in this stack) does.
    body = b'{"name": "trickle", "price_cents": 1}'
    head = (
        b"POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(body) * 4)
    )
    received, cut = dribble(
        stack, with_key(stack, head), body * 4
    )  # 152 bytes: 152 s at a byte a second
    assert cut, "the body was still being read after the deadline"
    # The app's answer (Caddy's own timeouts answer otherwise). Caddy drops the app's
    # hop-by-hop Connection: close and holds the client's connection to drain the body.
    assert statuses(received) == [408]
    assert b"the request body did not arrive in time" in received


def test_idle_connections_do_not_starve_real_requests(stack: Stack) -> None:
    idle: list[socket.socket] = []
    try:
        for _ in range(150):  # connected, never a byte sent
            idle.append(socket.create_connection(("127.0.0.1", stack.https_port), timeout=10))
        for _ in range(150):  # one request each, then idle on keep-alive
            kept = stack.tls_connect()
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
            idle.append(kept)
        with stack.client() as client:
            responses = [client.get("/items?limit=5") for _ in range(50)]
        assert [r.status_code for r in responses] == [200] * 50
    finally:
        for open_connection in idle:
            open_connection.close()


def vanish(stack: Stack, request: bytes, after: float) -> None:
    """Sends a request and disappears after `after` seconds with a TCP reset."""
    connection = stack.tls_connect()
    try:
        connection.sendall(with_key(stack, request))
        time.sleep(after)
    finally:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


def test_clients_that_vanish_mid_request_leave_nothing_behind(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 20}})
        assert job.status_code == 202
    job_id = job.json()["id"]

    def post_item(number: int) -> bytes:
        body = f'{{"name": "vanish-{uuid.uuid4()}", "price_cents": {number}}}'.encode()
        return (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    requests: list[tuple[bytes, float]] = []
    for number in range(40):  # whole requests, gone while the app writes the row
        requests.append((post_item(number), number % 10 / 1000))
    for number in range(10):  # gone half-way through the body
        requests.append((post_item(number)[:-10], 0.2))
    for _ in range(10):  # gone during a long-poll
        requests.append(
            (f"GET /jobs/{job_id}?wait=15 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), 0.5)
        )
    for number in range(20):  # gone while the app reads a page
        requests.append(
            (b"GET /items?limit=100 HTTP/1.1\r\nHost: localhost\r\n\r\n", number % 5 / 1000)
        )
    duplicate = post_item(0)  # one name, sent ten times: nine conflicts
    for number in range(10):  # gone while the app fails the request (409, 404) holding a connection
        requests.append((duplicate, number % 5 / 1000))
        requests.append(
            (b"GET /items/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % (2**62 + number), 0)
        )
    threads = [threading.Thread(target=vanish, args=(stack, *r)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    replicas = len(stack.containers("app"))
    # The pools give every connection back (background tasks borrow one for milliseconds)...
    idle_pools = [0.0] * replicas
    assert eventually(lambda: app_metric(stack, "db_pool_in_use") == idle_pools, timeout=30)
    # ...and Postgres holds no transaction open for anyone, within the pools' bound.
    connections = app_connections(stack)
    assert "idle in transaction" not in connections, connections
    assert "idle in transaction (aborted)" not in connections, connections
    assert sum(connections.values()) <= app_connection_bound(stack), connections
    with stack.client() as client:
        assert client.get("/readyz").status_code == 200
