"""A bounded soak through Caddy: a steady mix of reads, writes and jobs for a minute (longer
with SOAK_SECONDS=N). Zero 5xx, every job done exactly once, the app's memory flat after
warm-up, and the database connections within the pools' bound."""

import asyncio
import os
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest

from tests.integration.abuse import app_connection_bound, app_connections
from tests.integration.stack import Stack, eventually

WARM_UP_SECONDS = 15
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
RATE = 20  # requests per second, all clients together
CLIENTS = 4
SAMPLE_EVERY = 5
# What "flat" allows after warm-up: allocator noise and caches that settle, not a leak. At
# the soak's ~1,200 requests a minute, a leak of even 10 KB per request would exceed it.
MEMORY_SLACK_BYTES = 12 * 1024 * 1024

# One cycle of the mix: reads dominate, as in most APIs.
MIX = ["list"] * 7 + ["get"] * 3 + ["create"] * 3 + ["update"] * 2 + ["enqueue"] * 3 + ["job"] * 2


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


def app_memory(stack: Stack) -> list[int]:
    """Each replica's memory as `docker stats` shows it: usage less the reclaimable page cache."""
    used = []
    for container in stack.containers("app"):
        memory = container.stats(stream=False)["memory_stats"]
        stats = memory.get("stats", {})
        cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
        used.append(int(memory["usage"]) - int(cache))
    return used


class Soak:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.jobs: list[str] = []
        self.items: list[int] = []

    async def run(self, seconds: float) -> None:
        async with self.stack.async_client(http2=True) as client:
            created = await client.post("/items", json=self._item())
            self.items.append(created.json()["id"])
            await asyncio.gather(*(self._client(client, n, seconds) for n in range(CLIENTS)))

    async def _client(self, client: httpx.AsyncClient, number: int, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        interval = CLIENTS / RATE
        start = loop.time() + number * interval / CLIENTS
        for step in range(int(seconds / interval)):
            # A fixed schedule (not back to back): the rate stays steady whatever the latency.
            await asyncio.sleep(max(0.0, start + step * interval - loop.time()))
            operation = MIX[(step * CLIENTS + number) % len(MIX)]
            try:
                response = await self._send(client, operation)
            except httpx.HTTPError as error:
                self.errors.append(f"{operation}: {error!r}")
                continue
            self.statuses[response.status_code] += 1

    async def _send(self, client: httpx.AsyncClient, operation: str) -> httpx.Response:
        item = self.items[len(self.items) // 2]
        if operation == "list":
            return await client.get("/items", params={"limit": 20})
        if operation == "get":
            return await client.get(f"/items/{item}")
        if operation == "create":
            response = await client.post("/items", json=self._item())
            if response.status_code == 201:
                self.items.append(response.json()["id"])
            return response
        if operation == "update":
            return await client.patch(f"/items/{item}", json={"price_cents": len(self.items)})
        if operation == "enqueue":
            payload = {"kind": "sleep", "payload": {"seconds": 0.05}}
            response = await client.post("/jobs", json=payload)
            if response.status_code == 202:
                self.jobs.append(response.json()["id"])
            return response
        return await client.get(f"/jobs/{self.jobs[-1]}" if self.jobs else "/jobs/" + "0" * 32)

    @staticmethod
    def _item() -> dict[str, object]:
        return {"name": f"soak-{uuid.uuid4()}", "price_cents": 100}


class Sampler(threading.Thread):
    """Memory and database connections every few seconds, in the background."""

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self.stack = stack
        self.memory: list[list[int]] = []
        self.connections: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY):
            self.memory.append(app_memory(self.stack))
            self.connections.append(sum(app_connections(self.stack).values()))


def test_a_steady_mix_of_reads_writes_and_jobs(stack: Stack) -> None:
    replicas = len(stack.containers("app"))
    connection_bound = app_connection_bound(stack)
    since = datetime.now(UTC)
    asyncio.run(Soak(stack).run(WARM_UP_SECONDS))

    soak = Soak(stack)
    sampler = Sampler(stack)
    sampler.start()
    try:
        asyncio.run(soak.run(SOAK_SECONDS))
    finally:
        sampler.done.set()
        sampler.join()

    assert soak.errors == []
    assert all(status < 500 for status in soak.statuses), soak.statuses
    assert set(soak.statuses) <= {200, 201, 202}, soak.statuses
    print(f"soak: {sum(soak.statuses.values())} requests, {len(soak.jobs)} jobs")

    # Every job enqueued reaches done, having run exactly once.
    ids = ",".join(f"'{job}'" for job in soak.jobs)

    def unfinished() -> int:
        return int(stack.psql(f"SELECT count(*) FROM jobs WHERE id IN ({ids}) AND state <> 'done'"))

    assert eventually(lambda: unfinished() == 0, timeout=60, interval=1), unfinished()
    assert stack.psql(f"SELECT DISTINCT attempts FROM jobs WHERE id IN ({ids})") == "1"
    runs: Counter[str] = Counter()
    for container in stack.containers("app"):
        for line in stack.logs(container, since=since):
            if line.get("message") == "job done":
                runs[str(line.get("job_id"))] += 1
    assert {runs[job] for job in soak.jobs} == {1}, "each job ran exactly once"

    # Memory: flat after warm-up, per replica.
    print(f"memory samples (MiB): {[[m >> 20 for m in s] for s in sampler.memory]}")
    for replica in range(replicas):
        series = [sample[replica] for sample in sampler.memory]
        # Two samples each end: one sample can catch a burst of garbage.
        growth = (series[-1] + series[-2]) / 2 - (series[0] + series[1]) / 2
        assert growth < MEMORY_SLACK_BYTES, series
    # Database connections: never beyond what the pools may hold, and none left in a transaction.
    print(f"database connections: {sampler.connections}")
    assert max(sampler.connections) <= connection_bound
    assert "idle in transaction" not in app_connections(stack)
