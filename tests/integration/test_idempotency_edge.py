"""Idempotency-Key through Caddy: a keyed write sent twice, one after the other or at once,
creates one row; and the edge's buffering of keyed bodies survives a flood of them."""

import asyncio
import statistics
import time
import uuid

import httpx
import pytest

from tests.integration.stack import Stack

# Caddy's MAX_BODY_SIZE is 1MB (10^6 bytes): a body just under it is buffered whole.
FLOOD_BODY_BYTES = 999_000
FLOOD_IN_FLIGHT = 96
FLOOD_ROUNDS = 3
# The edge's memory limit (compose.yaml): the flood must stay well within it.
PROXY_MEMORY_LIMIT = 256 * 2**20
STARVED_SECONDS = 5


def item(name: str) -> dict[str, object]:
    return {"name": name, "description": "sent twice", "price_cents": 5}


def rows_named(stack: Stack, name: str) -> int:
    return int(stack.psql(f"SELECT count(*) FROM items WHERE name = '{name}'"))


def test_a_keyed_post_sent_twice_creates_one_item(stack: Stack) -> None:
    name, key = f"twice-{uuid.uuid4().hex}", uuid.uuid4().hex
    with stack.client(http2=True) as client:
        first = client.post("/items", json=item(name), headers={"Idempotency-Key": key})
        again = client.post("/items", json=item(name), headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert rows_named(stack, name) == 1


def test_a_keyed_post_sent_twice_at_once_creates_one_item(stack: Stack) -> None:
    """Both reach the app together (one per replica, most likely): one creates, the other is
    told it is a repeat (409 while the first runs, or the first's answer once it is stored)."""

    async def twice(name: str, key: str) -> list[httpx.Response]:
        async with stack.async_client() as one, stack.async_client() as other:
            headers = {"Idempotency-Key": key}
            return list(
                await asyncio.gather(
                    one.post("/items", json=item(name), headers=headers),
                    other.post("/items", json=item(name), headers=headers),
                )
            )

    statuses = []
    for _ in range(10):
        name = f"at-once-{uuid.uuid4().hex}"
        responses = asyncio.run(twice(name, uuid.uuid4().hex))
        statuses.append(sorted(r.status_code for r in responses))
        assert rows_named(stack, name) == 1, statuses[-1]
        created = [r for r in responses if "idempotent-replayed" not in r.headers]
        assert [r.status_code for r in created].count(201) == 1, statuses[-1]
    print(f"pairs sent at once: {statuses}")
    assert all(pair in ([201, 201], [201, 409]) for pair in statuses), statuses


@pytest.fixture(scope="module")
def abused(abuse_stack: Stack) -> Stack:
    return abuse_stack


def test_a_flood_of_keyed_megabyte_bodies_neither_kills_the_edge_nor_starves_others(
    abused: Stack,
) -> None:
    """96 keyed ~1 MB writes in flight at once, three times over (each one buffered whole by
    Caddy so that it could be replayed), while another client reads: the edge stays up within
    its memory limit, the reader is answered throughout."""
    proxy = abused.container("proxy")
    restarts_before = proxy.attrs["RestartCount"]
    body = {"name": "flood", "description": "x" * FLOOD_BODY_BYTES, "price_cents": 1}
    peak = 0

    async def flood() -> list[int | str]:
        limits = httpx.Limits(max_connections=FLOOD_IN_FLIGHT)
        async with abused.async_client(limits=limits) as client:
            client.timeout = httpx.Timeout(120)

            async def one() -> int | str:
                headers = {"Idempotency-Key": uuid.uuid4().hex}
                try:
                    return (await client.post("/items", json=body, headers=headers)).status_code
                except httpx.HTTPError as error:
                    return repr(error)

            outcomes: list[int | str] = []
            for _ in range(FLOOD_ROUNDS):
                outcomes += await asyncio.gather(*(one() for _ in range(FLOOD_IN_FLIGHT)))
            return outcomes

    async def reader(stop: asyncio.Event) -> list[float]:
        latencies = []
        async with abused.async_client(http2=True) as client:
            while not stop.is_set():
                started = time.monotonic()
                response = await client.get("/items?limit=5")
                assert response.status_code == 200, response.text
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
        return latencies

    async def watch_memory(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            stats = await asyncio.to_thread(proxy.stats, stream=False)
            peak = max(peak, int(stats["memory_stats"].get("usage", 0)))

    async def run() -> tuple[list[int | str], list[float]]:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            reading = group.create_task(reader(stop))
            group.create_task(watch_memory(stop))
            try:
                outcomes = await flood()
            finally:
                stop.set()
        return outcomes, reading.result()

    outcomes, latencies = asyncio.run(run())
    # The description is over its 2,000-character limit: each one is read whole, then 422.
    assert outcomes == [422] * FLOOD_IN_FLIGHT * FLOOD_ROUNDS, set(map(str, outcomes))
    proxy.reload()
    assert proxy.attrs["State"]["Status"] == "running"
    assert not proxy.attrs["State"]["OOMKilled"]
    assert proxy.attrs["RestartCount"] == restarts_before
    p50, p99 = (statistics.quantiles(latencies, n=100, method="inclusive")[i] for i in (49, 98))
    print(
        f"flood: edge memory peak {peak / 2**20:.0f} MiB; the reader got {len(latencies)} answers,"
        f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    assert peak < PROXY_MEMORY_LIMIT * 0.9
    # Starved would mean waiting on the flood: a read is never held for seconds.
    assert max(latencies) < STARVED_SECONDS
