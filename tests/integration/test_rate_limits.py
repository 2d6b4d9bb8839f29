"""Rate limits through Caddy, on a stack of their own with them on and low: two replicas
behind Caddy's round robin (the limit is per replica, so a client gets `REPLICAS` times it)
and public reads, limited by the address Caddy saw.

- One key floods writes with 32 in flight: no 5xx, every 429 carries Retry-After and both
  RateLimit headers, and the admitted rate over a measured window is the limit x replicas,
  within `TOLERANCE`. Meanwhile another key's mixed traffic (MixedTraffic, at a rate under its
  limit) and an anonymous reader are served as usual: no 429, latencies printed.
- Anonymous reads from this host (the bridge gateway, as Caddy sees it) are limited by that
  address; a client in a container on the stack's network is another address, served while
  the host is refused; forwarding headers a client sends (X-Forwarded-For, X-Real-IP) move
  neither into another bucket.
"""

import asyncio
import json
import re
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.stack import Stack
from tests.integration.tools import CA_IN_TOOLS, Tools
from tests.integration.traffic import MixedTraffic

PROJECT = "ratelimit-test"
REPLICAS = 2
# Per replica. Low, so that one test client floods them many times over.
READS_PER_SECOND, READ_BURST = 5, 10
WRITES_PER_SECOND, WRITE_BURST = 5, 10
FLOOD_CLIENTS = 32
FLOOD_SECONDS = 12
# The window the admitted rate is measured over starts this long into the flood, when both
# replicas' bursts are long spent, and ends with it.
SETTLE_SECONDS = 2
# Admitted requests a second over the window, against WRITES_PER_SECOND x REPLICAS: the
# replicas refill independently, and a response's arrival is not its admission.
TOLERANCE = 0.15
# Another key's traffic: 2 clients, a pause of 0.25 s after each request, ~2 writes and
# ~1.5 limited reads a second each, well under its own limit.
OTHER_CLIENTS, OTHER_PAUSE = 2, 0.25
ANONYMOUS_PAUSE = 0.5
# "Served as usual": every request answered as expected; the latencies are printed, and this
# bound only catches a client starved by the flood (the clients' timeout is 30 s).
SERVED_WITHIN = 5.0

POLICY = re.compile(r'^"(reads|writes)";q=(\d+);w=(\d+)$')
STATE = re.compile(r'^"(reads|writes)";r=(\d+);t=(\d+)$')


@pytest.fixture(scope="module")
def limited_stack(stack_workdir: Path) -> Iterator[Stack]:
    overrides = {
        "HTTP_PORT": "53080",
        "HTTPS_PORT": "53443",
        "APP_REPLICAS": str(REPLICAS),
        "APP_PUBLIC_READS": "true",
        "APP_RATE_LIMITS": "true",
        "APP_RATE_LIMIT_READS_PER_SECOND": str(READS_PER_SECOND),
        "APP_RATE_LIMIT_READ_BURST": str(READ_BURST),
        "APP_RATE_LIMIT_WRITES_PER_SECOND": str(WRITES_PER_SECOND),
        "APP_RATE_LIMIT_WRITE_BURST": str(WRITE_BURST),
    }
    with Stack(PROJECT, stack_workdir, overrides=overrides).running() as running:
        yield running


@dataclass(frozen=True)
class Answer:
    at: float
    status: int | None  # None: no HTTP answer
    seconds: float
    headers: httpx.Headers | None = None
    content_type: str | None = None


async def _send(client: httpx.AsyncClient, method: str, path: str, **options: object) -> Answer:
    sent = time.monotonic()
    try:
        response = await client.request(method, path, **options)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return Answer(time.monotonic(), None, time.monotonic() - sent)
    now = time.monotonic()
    return Answer(
        now,
        response.status_code,
        now - sent,
        response.headers,
        response.headers.get("content-type"),
    )


async def _flood_and_read(stack: Stack, key: str) -> tuple[list[Answer], list[Answer], float]:
    """FLOOD_CLIENTS writing as fast as answered with `key`, and meanwhile one anonymous
    reader; their answers, and when the flood began."""
    flood: list[Answer] = []
    reads: list[Answer] = []
    started = time.monotonic()
    stop = started + FLOOD_SECONDS

    async def flooder(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            body = {"name": f"flood-{uuid.uuid4().hex}", "price_cents": 1}
            flood.append(await _send(client, "POST", "/items", json=body))

    async def reader(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            reads.append(await _send(client, "GET", "/items?limit=5"))
            await asyncio.sleep(ANONYMOUS_PAUSE)

    limits = httpx.Limits(max_connections=FLOOD_CLIENTS)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        stack.async_client(limits=limits, headers=headers) as keyed,
        stack.async_client(anonymous=True) as anonymous,
    ):
        await asyncio.gather(*(flooder(keyed) for _ in range(FLOOD_CLIENTS)), reader(anonymous))
    return flood, reads, started


def _check_limited(answer: Answer, policy: str, limit: int, window: int) -> None:
    """Both headers of the draft, for this policy and limit."""
    assert answer.headers is not None
    stated = POLICY.match(answer.headers.get("ratelimit-policy", ""))
    assert stated is not None, answer.headers
    assert stated.groups() == (policy, str(limit), str(window))
    state = STATE.match(answer.headers.get("ratelimit", ""))
    assert state is not None, answer.headers
    assert state.group(1) == policy
    assert int(state.group(2)) <= limit


def _latencies(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{len(ordered)} requests, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


def test_a_flood_from_one_key_is_held_to_the_limit_and_others_are_served(
    limited_stack: Stack,
) -> None:
    key = limited_stack.create_key(f"flood-{uuid.uuid4().hex[:8]}", ("items:read", "items:write"))
    window = -(-WRITE_BURST // WRITES_PER_SECOND)
    with MixedTraffic(limited_stack, clients=OTHER_CLIENTS, pause=OTHER_PAUSE) as other:
        time.sleep(3)  # its latencies before the flood
        flood, anonymous, started = asyncio.run(_flood_and_read(limited_stack, key))
        ended = time.monotonic()
    offered = len(flood) / FLOOD_SECONDS
    print(f"flood: {_latencies([a.seconds for a in flood])}, {offered:.0f} requests/s")

    assert [a for a in flood if a.status is None or a.status >= 500] == []
    refused = [a for a in flood if a.status == 429]
    admitted = [a for a in flood if a.status == 201]
    assert len(refused) + len(admitted) == len(flood), {a.status for a in flood}
    for answer in refused:
        assert answer.content_type == "application/problem+json"
        assert answer.headers is not None
        assert int(answer.headers["retry-after"]) >= 1
        _check_limited(answer, "writes", WRITE_BURST, window)
    for answer in admitted:
        _check_limited(answer, "writes", WRITE_BURST, window)

    measured = [a for a in admitted if a.at >= started + SETTLE_SECONDS]
    seconds = started + FLOOD_SECONDS - (started + SETTLE_SECONDS)
    rate = len(measured) / seconds
    expected = WRITES_PER_SECOND * REPLICAS
    print(
        f"flood: {len(admitted)} admitted, {len(refused)} refused; over the last {seconds:.0f} s "
        f"{rate:.2f} admitted/s for a limit of {WRITES_PER_SECOND}/s x {REPLICAS} replicas"
    )
    assert abs(rate - expected) <= TOLERANCE * expected
    # Never more than the bursts and the refill allow, over the whole flood.
    assert len(admitted) <= REPLICAS * (WRITE_BURST + WRITES_PER_SECOND * (ended - started))

    during = [o for o in other.outcomes if started <= o.at <= ended]
    before = [o for o in other.outcomes if o.at < started]
    print(f"another key, before the flood: {_latencies([o.seconds for o in before])}")
    print(f"another key, during the flood: {_latencies([o.seconds for o in during])}")
    print(f"anonymous reads, during the flood: {_latencies([a.seconds for a in anonymous])}")
    other.verify()  # every request of the other key answered as expected: no 429
    assert during, "the other key sent nothing during the flood"
    assert max(o.seconds for o in during) < SERVED_WITHIN
    assert [a.status for a in anonymous] == [200] * len(anonymous)
    assert max(a.seconds for a in anonymous) < SERVED_WITHIN


def _whoami(client: httpx.Client) -> str:
    return str(client.get("/whoami").json()["client"])


def test_anonymous_reads_are_limited_by_the_address_caddy_saw(
    limited_stack: Stack,
) -> None:
    tools = Tools.build()
    with limited_stack.client(anonymous=True) as client:
        host = _whoami(client)
    spoofed = {"X-Forwarded-For": "198.51.100.7", "X-Real-IP": "198.51.100.8"}
    stop = threading.Event()
    host_answers: list[int] = []

    def drain() -> None:
        """Keeps this host's bucket empty: 8 readers at once, as fast as answered."""

        async def run() -> None:
            async with limited_stack.async_client(anonymous=True) as anonymous:

                async def reader() -> None:
                    while not stop.is_set():
                        answer = await _send(anonymous, "GET", "/items?limit=1")
                        assert answer.status is not None
                        host_answers.append(answer.status)

                await asyncio.gather(*(reader() for _ in range(8)))

        asyncio.run(run())

    draining = threading.Thread(target=drain, daemon=True)
    draining.start()
    try:
        time.sleep(3)
        assert 429 in host_answers, "this host's anonymous reads were never limited"
        # The same host, claiming other addresses: the same bucket (Caddy overwrites
        # X-Forwarded-For and drops X-Real-IP).
        with limited_stack.client(anonymous=True, headers=spoofed) as client:
            assert _whoami(client) == host
            statuses = [client.get("/items?limit=1").status_code for _ in range(20)]
        assert statuses.count(429) >= 10, statuses  # a bucket of its own would admit all 20
        # Another address, claiming to be this host: a bucket of its own, full.
        inside = _curl_from_the_network(limited_stack, tools, {"X-Forwarded-For": host})
        assert inside[0] != host, "both clients have the same address: nothing to compare"
        assert inside[1:] == ["200"] * 5, inside
    finally:
        stop.set()
        draining.join(timeout=30)
    print(f"this host ({host}): {host_answers.count(429)} of {len(host_answers)} refused")


def _curl_from_the_network(stack: Stack, tools: Tools, headers: dict[str, str]) -> list[str]:
    """From a container on the stack's edge network: the address /whoami reports for it,
    then the statuses of five anonymous reads, all with `headers`."""
    networks = stack.container("proxy").attrs["NetworkSettings"]["Networks"]
    edge = next(name for name in networks if name.endswith("_edge"))
    at = f"localhost:{stack.https_port}:proxy:{stack.https_port}"
    read = f"{stack.base_url}/items?limit=1"
    options = ["--connect-to", at, *(f"-H{name}: {value}" for name, value in headers.items())]
    whoami = tools.run(
        stack, "curl", "--silent", "--fail", "--cacert", CA_IN_TOOLS, *options,
        f"{stack.base_url}/whoami", network=edge,
    )  # fmt: skip
    statuses = tools.run(
        stack, "curl", "--silent", "--cacert", CA_IN_TOOLS, *options,
        "--write-out", r"%{http_code}\n",
        *[arg for _ in range(5) for arg in ("--output", "/dev/null", read)],
        network=edge,
    )  # fmt: skip
    return [str(json.loads(whoami)["client"]), *statuses.split()]
