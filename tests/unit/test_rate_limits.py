"""Rate limits: the token buckets' arithmetic on a fake clock, their memory bounds, the
draft's headers, and the 429 problem through the app (a test router that calls `enforce` as
the auth dependency does)."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.types import ASGIApp

from service.api.errors import PROBLEM_JSON
from service.api.ratelimit import enforce, headers
from service.domain.errors import NotFound
from service.domain.ratelimit import UNLIMITED, Decision, Policy, RateLimits
from service.main import create_api, create_app
from service.settings import Settings
from tests.unit.conftest import bearer, make_key, make_settings, run_lifespan

READS = Policy("reads", rate=2.0, burst=4)
WRITES = Policy("writes", rate=0.5, burst=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limits(clock: Clock) -> RateLimits:
    return RateLimits({"read": READS, "write": WRITES}, max_identities=100, clock=clock)


def test_a_burst_then_the_rate(limits: RateLimits, clock: Clock) -> None:
    burst = [limits.admit("key:a", "read") for _ in range(4)]
    assert [d.admitted for d in burst] == [True] * 4
    assert [d.remaining for d in burst] == [3, 2, 1, 0]
    assert burst[0].reset == 1  # half a second of refill, rounded up
    assert burst[-1].reset == 2  # 4 tokens at 2 a second
    refused = limits.admit("key:a", "read")
    assert refused == Decision(False, READS, remaining=0, reset=2, retry_after=1)
    clock.now += 0.5  # one token back
    assert limits.admit("key:a", "read").admitted
    assert not limits.admit("key:a", "read").admitted
    clock.now += 10  # full again, never more than the burst
    assert [limits.admit("key:a", "read").admitted for _ in range(5)] == [True] * 4 + [False]


def test_retry_after_is_whole_seconds_until_a_token(limits: RateLimits, clock: Clock) -> None:
    for _ in range(2):
        assert limits.admit("key:a", "write").admitted
    assert limits.admit("key:a", "write").retry_after == 2  # 0.5 a second
    clock.now += 1.5
    assert limits.admit("key:a", "write").retry_after == 1  # 0.75 there: 0.5 s, at least 1
    clock.now += 0.5
    assert limits.admit("key:a", "write").admitted


def test_refused_requests_take_nothing(limits: RateLimits, clock: Clock) -> None:
    for _ in range(2):
        limits.admit("key:a", "write")
    for _ in range(100):
        assert not limits.admit("key:a", "write").admitted
    clock.now += 2  # one token, however many were refused meanwhile
    assert limits.admit("key:a", "write").admitted


def test_kinds_and_identities_have_buckets_of_their_own(limits: RateLimits) -> None:
    for _ in range(2):
        limits.admit("key:a", "write")
    assert not limits.admit("key:a", "write").admitted
    assert limits.admit("key:a", "read").admitted
    assert limits.admit("key:b", "write").admitted
    assert limits.admit("address:192.0.2.1", "write").admitted


def test_idle_identities_are_forgotten_once_full(limits: RateLimits, clock: Clock) -> None:
    limits.admit("key:a", "write")
    limits.admit("key:b", "read")
    clock.now += 3.9  # key:a's write bucket refills in 4 s (the slowest policy's)
    limits.admit("key:c", "read")
    assert len(limits) == 3
    clock.now += 0.1
    limits.admit("key:c", "read")
    assert len(limits) == 1  # a and b were full: forgetting them changes no answer


def test_the_cap_evicts_the_least_recently_seen(clock: Clock) -> None:
    limits = RateLimits({"read": READS, "write": WRITES}, max_identities=2, clock=clock)
    for _ in range(2):
        limits.admit("key:a", "write")
        limits.admit("key:b", "write")
    limits.admit("key:a", "read")  # a seen last: b is the oldest
    assert limits.admit("key:c", "write").admitted
    assert len(limits) == 2
    assert not limits.admit("key:a", "write").admitted  # kept, still empty
    assert limits.admit("key:b", "write").admitted  # evicted: a full bucket again


def test_off_admits_everything_without_headers(clock: Clock) -> None:
    limits = RateLimits(None, max_identities=1, clock=clock)
    assert all(limits.admit("key:a", "write") is UNLIMITED for _ in range(1000))
    assert len(limits) == 0
    assert headers(UNLIMITED) == []


def test_headers_in_the_drafts_structured_field_syntax() -> None:
    decision = Decision(True, Policy("writes", rate=5.0, burst=10), remaining=7, reset=1)
    assert headers(decision) == [
        (b"ratelimit-policy", b'"writes";q=10;w=2'),
        (b"ratelimit", b'"writes";r=7;t=1'),
    ]
    assert Policy("slow", rate=0.3, burst=1).window == 4  # whole seconds, rounded up


# --- through the app ---------------------------------------------------------------------
async def _limited(request: Request) -> None:
    """What the auth dependency does: a key's name when one is sent, else the address."""
    key = request.headers.get("x-test-key")
    assert request.client is not None
    identity = f"key:{key}" if key else f"address:{request.client.host}"
    enforce(request, identity, "read" if request.method in ("GET", "HEAD") else "write")


limited_router = APIRouter(dependencies=[Depends(_limited)])


@limited_router.get("/limited")
async def read_limited() -> dict[str, bool]:
    return {"ok": True}


@limited_router.post("/limited", status_code=201)
async def write_limited() -> dict[str, bool]:
    return {"ok": True}


@limited_router.get("/limited/missing")
async def missing() -> None:
    raise NotFound("nothing here")


@asynccontextmanager
async def _serving(app: ASGIApp) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """The app with its lifespan, and clients of it from one address each."""
    async with run_lifespan(app) as manager:

        def client(address: str = "192.0.2.10") -> httpx.AsyncClient:
            transport = httpx.ASGITransport(manager.app, client=(address, 1234))
            return httpx.AsyncClient(transport=transport, base_url="http://testserver")

        yield client


def _settings(database_url: str, rate_limits: bool = True, **overrides: object) -> Settings:
    return make_settings(
        database_url,
        rate_limits=rate_limits,
        rate_limit_reads_per_second=1.0,
        rate_limit_read_burst=3,
        rate_limit_writes_per_second=0.25,
        rate_limit_write_burst=2,
        **overrides,
    )


def _api(database_url: str, rate_limits: bool = True) -> FastAPI:
    api = create_api(_settings(database_url, rate_limits))
    api.include_router(limited_router)
    return api


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _serving(_api(database_url)) as client, client() as http:
        yield http


async def test_the_429_problem_with_retry_after_and_both_headers(
    limited: httpx.AsyncClient,
) -> None:
    for remaining in (1, 0):
        admitted = await limited.post("/limited", headers={"x-test-key": "a"})
        assert admitted.status_code == 201
        assert admitted.headers["ratelimit-policy"] == '"writes";q=2;w=8'
        assert admitted.headers["ratelimit"].startswith(f'"writes";r={remaining};t=')
    refused = await limited.post("/limited", headers={"x-test-key": "a"})
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.headers["retry-after"] == "4"  # a token every 4 s
    assert refused.headers["ratelimit-policy"] == '"writes";q=2;w=8'
    assert refused.headers["ratelimit"] == '"writes";r=0;t=8'
    assert refused.json() == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "over the writes limit: retry in 4 s",
        "instance": "/limited",
    }
    # Reads have a bucket of their own, and so has another key.
    assert (await limited.get("/limited", headers={"x-test-key": "a"})).status_code == 200
    assert (await limited.post("/limited", headers={"x-test-key": "b"})).status_code == 201


async def test_anonymous_reads_are_limited_by_address(database_url: str) -> None:
    async with (
        _serving(_api(database_url)) as client,
        client("192.0.2.1") as first,
        client("192.0.2.2") as second,
    ):
        statuses = [(await first.get("/limited")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert (await second.get("/limited")).status_code == 200


async def test_errors_after_enforce_carry_the_headers(limited: httpx.AsyncClient) -> None:
    response = await limited.get("/limited/missing")
    assert response.status_code == 404
    assert response.headers["ratelimit"] == '"reads";r=2;t=1'


async def test_routes_that_never_enforce_get_no_headers(limited: httpx.AsyncClient) -> None:
    response = await limited.get("/healthz")
    assert response.status_code == 200
    assert "ratelimit" not in response.headers


async def test_head_on_the_probes_is_never_limited(limited: httpx.AsyncClient) -> None:
    for _ in range(5):  # past the read burst of 3
        for path in ("/healthz", "/readyz"):
            response = await limited.head(path)
            assert response.status_code == 200, path
            assert "ratelimit" not in response.headers


async def test_off_admits_and_sends_no_headers(database_url: str) -> None:
    async with _serving(_api(database_url, rate_limits=False)) as client, client() as http:
        for _ in range(5):
            response = await http.post("/limited", headers={"x-test-key": "a"})
            assert response.status_code == 201
            assert "ratelimit" not in response.headers
            assert "ratelimit-policy" not in response.headers


async def test_the_api_limits_each_key_and_each_anonymous_address(database_url: str) -> None:
    """Through the real `authorize`: a key by its name, an anonymous read by its address."""
    app = create_app(_settings(database_url, public_reads=True))
    item = {"name": "limited", "price_cents": 1}
    async with _serving(app) as client, client() as http:
        first, second = await make_key(database_url, "first"), await make_key(database_url, "b")
        statuses = [
            (await http.post("/items", json={**item, "name": f"i{n}"}, headers=bearer(first)))
            for n in range(3)
        ]
        assert [r.status_code for r in statuses] == [201, 201, 429]
        assert statuses[-1].headers["ratelimit"] == '"writes";r=0;t=8'
        other = await http.post("/items", json=item, headers=bearer(second))
        assert other.status_code == 201
        assert [(await http.get("/items")).status_code for _ in range(4)] == [200] * 3 + [429]
        async with client("192.0.2.99") as elsewhere:
            assert (await elsewhere.get("/items")).status_code == 200
        # Not authenticated, so not limited: no bucket for a key nobody has.
        refused = await http.post("/items", json=item)
        assert refused.status_code == 401
        assert "ratelimit" not in refused.headers
