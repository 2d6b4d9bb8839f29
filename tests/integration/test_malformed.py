"""Malformed requests through Caddy: each gets a clear 4xx in the problem shape (or the status
the HTTP RFCs prescribe), never a 5xx, and the stack keeps serving afterwards."""

import ssl
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.abuse import (
    body_of,
    exchange,
    read_until_closed,
    request,
    statuses,
    with_key,
)
from tests.integration.stack import Stack

JSON = {"content-type": "application/json"}
ONE_MB = 1_000_000  # Caddy's "1MB" (MAX_BODY_SIZE) is decimal


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    # HTTP/1.1: httpx's HTTP/2 client writes a whole body before reading, so it would stall on
    # the bodies Caddy refuses half-way.
    with stack.client() as client:
        yield client


@pytest.fixture(scope="module")
def item_id(client: httpx.Client) -> int:
    response = client.post("/items", json={"name": f"target-{uuid.uuid4()}", "price_cents": 1})
    assert response.status_code == 201
    return int(response.json()["id"])


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    return dict(problem)


DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_PAYLOAD = b'{"kind": "sleep", "payload": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        ("/items", JSON, b'{"name": "x",', 422),  # truncated JSON
        ("/items", JSON, b'{"name": "x", "price_cents": 1}}', 422),  # trailing garbage
        ("/items", {"content-type": "text/plain"}, b'{"name": "x", "price_cents": 1}', 422),
        ("/items", {"content-type": "application/x-www-form-urlencoded"}, b"name=x", 422),
        ("/items", {}, b'{"name": "x", "price_cents": 1}', 422),  # no content type
        ("/items", JSON, b'{"name": "\xff\xfe", "price_cents": 1}', 400),  # invalid UTF-8
        ("/items", JSON, b'{"name": "\\ud800", "price_cents": 1}', 422),  # lone surrogate
        ("/items", JSON, b'{"name": "a\\u0000b", "price_cents": 1}', 422),  # NUL: no 500
        ("/items", JSON, b'{"name": "n", "price_cents": ' + b"9" * 5_000 + b"}", 400),
        ("/items", JSON, b'{"name": "n", "price_cents": ' + b"9" * 30 + b"}", 422),
        ("/items", JSON, b'{"name": "n", "price_cents": 1e400}', 422),
        ("/items", JSON, b'{"name": "n", "price_cents": NaN}', 422),
        ("/items", JSON, b'{"name": "n", "price_cents": false}', 422),  # not an integer
        ("/items", JSON, b'{"name": "n", "price_cents": "1"}', 422),
        ("/items", JSON, DEEP_ARRAY, 400),  # deeper than the JSON parser goes
        ("/jobs", JSON, DEEP_PAYLOAD, 422),
        ("/jobs", JSON, b'{"kind": "sleep", "payload": {"seconds": true}}', 422),
    ],
)
def test_malformed_bodies_get_a_4xx_problem(
    client: httpx.Client, path: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    response = client.post(path, content=body, headers=headers)
    assert_problem(response, status)


def test_a_nul_character_in_an_update_is_a_422(client: httpx.Client, item_id: int) -> None:
    response = client.patch(f"/items/{item_id}", json={"description": "a\u0000b"})
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "loc": ["body", "description"],
            "msg": "String should match pattern '^[^\\x00]*$'",
            "type": "string_pattern_mismatch",
        }
    ]


@pytest.mark.parametrize(
    "target",
    [
        "/items/" + "9" * 40,  # beyond bigint
        "/items/-1",
        "/items/1.5",
        "/jobs/not-a-uuid",
        "/items?limit=" + "9" * 5_000,
        "/items?limit=0",
        "/items?after=1e400",
        "/items?after=%00",
        "/items?after=%zz",
        "/jobs/00000000-0000-0000-0000-000000000000?wait=nan",
        "/jobs/00000000-0000-0000-0000-000000000000?wait=inf",
        "/jobs/00000000-0000-0000-0000-000000000000?wait=-1",
    ],
)
def test_malformed_paths_and_queries_get_a_422(client: httpx.Client, target: str) -> None:
    assert_problem(client.get(target), 422)


def test_a_body_over_the_limit_is_a_413_from_caddy_and_the_app_stays_in_rotation(
    client: httpx.Client,
) -> None:
    # Just under the limit the body reaches the app, which refuses the field (not Caddy).
    near_limit = b'{"name": "big", "price_cents": 1, "description": "' + b"x" * (ONE_MB - 100)
    assert_problem(client.post("/items", content=near_limit + b'"}', headers=JSON), 422)
    # Over it, Caddy answers, however often: 413s must not count against the upstream
    # (with passive health checks, each would mark it failed: the next requests get 503).
    for _ in range(5):
        problem = assert_problem(client.post("/items", content=b"x" * (2 * ONE_MB)), 413)
        assert problem == {
            "type": "about:blank",
            "title": "Request Entity Too Large",
            "status": 413,
        }
    responses = [client.get("/items?limit=1") for _ in range(20)]
    assert [r.status_code for r in responses] == [200] * 20


def test_an_oversized_chunked_body_ends_the_connection(stack: Stack) -> None:
    """No desync: the part of the body Caddy did not read is never parsed as a request."""
    smuggled = b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with stack.tls_connect() as connection:
        connection.sendall(
            with_key(
                stack,
                b"POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
            )
        )
        chunk = b"x" * 65_536
        try:
            for _ in range(24):  # 1.5 MB
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            # Caddy closed the connection while we were still sending: what we want (over TLS
            # the close can also surface as an EOF in the middle of our write).
            pass
        received = read_until_closed(connection)
    assert statuses(received) == [413]
    assert b"Connection: close" in received


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Padding": "a" * 7_000}, 200),  # within the 8 KiB header budget
        ({"X-Padding": "a" * 64_000}, 431),
        ({f"X-Header-{n}": "v" for n in range(2_000)}, 431),
    ],
)
def test_oversized_headers_are_a_431_from_caddy(
    stack: Stack, headers: dict[str, str], status: int
) -> None:
    received = exchange(stack, request("GET", "/healthz", headers))
    assert statuses(received) == [status]


@pytest.mark.parametrize(
    ("length", "status", "problem"),
    [
        (8_000, 200, False),
        (10_000, 414, True),  # over 8 KiB: Caddy's 414, in the problem shape
        (64_000, 431, False),  # beyond the request head limit: the server's own 431
    ],
)
def test_over_long_uris_are_refused_by_caddy(
    stack: Stack, length: int, status: int, problem: bool
) -> None:
    target = "/healthz?pad=" + "a" * (length - len("/healthz?pad="))
    received = exchange(stack, request("GET", target))
    assert statuses(received) == [status]
    if problem:
        assert b"Content-Type: application/problem+json" in received
        assert b'"status":414' in body_of(received)


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("FOO", "/healthz", "GET"),
        ("PUT", "/items", "GET, POST"),
        ("PUT", "/items/1", "DELETE, GET, PATCH"),  # every route on the path, not the first
        ("OPTIONS", "/items/1", "DELETE, GET, PATCH"),
        ("TRACE", "/jobs", "POST"),
    ],
)
def test_unknown_and_unsupported_methods_are_a_405_with_allow(
    client: httpx.Client, method: str, target: str, allow: str
) -> None:
    response = client.request(method, target)
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    "target",
    [
        "/x/../metrics",
        "/x/%2e%2e/metrics",
        "/x/%2E%2E/metrics",
        "//metrics",
        "/./metrics",
        "/%6detrics",
        "/metrics%2f",
        "/metrics/../metrics",
        "/items/../../../etc/passwd",
        "/items/%2e%2e/%2e%2e/etc/passwd",
        "/items/..%2f..%2fetc/passwd",
        "//items",
    ],
)
def test_path_tricks_reach_neither_metrics_nor_files(stack: Stack, target: str) -> None:
    received = exchange(stack, request("GET", target))
    assert statuses(received) == [404]
    assert b"Content-Type: application/problem+json" in received
    assert b"http_requests_total" not in received
    assert b"root:" not in received


# What an attacker hides in a body to reach the app's /metrics; it asks for the connection to
# close, so that an answer to it (if any) is the last thing on the connection.
SMUGGLED = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        # CL.TE: Transfer-Encoding wins (RFC 9112 6.3), so what follows the last chunk is the
        # next request, and Caddy routes it by its own rules (404 for /metrics): the app only
        # ever gets requests framed by Caddy, never bytes smuggled inside one.
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            [422, 404],
        ),
        # TE.CL: the same framing whatever the order of the headers.
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 60\r\n\r\n0\r\n\r\n" + SMUGGLED,
            [422, 404],
        ),
        # Two different lengths: refused, connection closed.
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
            b"Content-Length: 60\r\n\r\nabcd" + SMUGGLED,
            [400],
        ),
        # A transfer coding Caddy does not know: 501, as RFC 9112 6.1 prescribes.
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n"
            b"Content-Length: 4\r\n\r\nabcd" + SMUGGLED,
            [501],
        ),
        # Obfuscated chunked (a space before the colon): not a valid header at all.
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n"
            b"Content-Length: 4\r\n\r\nabcd" + SMUGGLED,
            [400],
        ),
        # Broken chunked framing: a bare LF, a chunk size that is not hex.
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\n\r\n" + SMUGGLED,
            [400],
        ),
        (
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nabc\r\n0\r\n\r\n" + SMUGGLED,
            [400],
        ),
    ],
)
def test_request_smuggling_is_answered_without_desync(
    stack: Stack, client: httpx.Client, attack: bytes, expected: list[int]
) -> None:
    received = exchange(stack, with_key(stack, attack))
    assert statuses(received) == expected
    # Whatever was smuggled was never served by the app's /metrics...
    assert b"http_requests_total" not in received
    if 404 in expected:
        assert received.endswith(b'{"type":"about:blank","title":"Not Found","status":404}')
    # ...and the next client gets its own answer.
    assert client.get("/healthz").json()["status"] == "ok"


def test_the_stack_still_serves_after_the_bad_input(stack: Stack, client: httpx.Client) -> None:
    assert client.get("/readyz").status_code == 200
    for container in stack.containers("app"):
        container.reload()
        assert container.attrs["RestartCount"] == 0
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
