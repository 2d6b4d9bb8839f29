"""A bounded soak through Caddy: the shared mixed traffic (32 clients, reads, writes, deletes
and jobs) for a minute (longer with SOAK_SECONDS=N). No failed request, every job done exactly
once, the app's memory flat after warm-up, and the database connections within the pools'
bound."""

import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from tests.integration.abuse import app_connection_bound, app_connections
from tests.integration.stack import Stack
from tests.integration.traffic import MixedTraffic

WARM_UP_SECONDS = 15
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
SAMPLE_EVERY = 5
# What "flat" allows after warm-up: allocator noise and caches that settle, not a leak. At the
# soak's tens of thousands of requests a minute, a leak of even 1 KB per request would exceed it.
MEMORY_SLACK_BYTES = 12 * 1024 * 1024


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
    with MixedTraffic(stack):
        time.sleep(WARM_UP_SECONDS)

    sampler = Sampler(stack)
    sampler.start()
    try:
        with MixedTraffic(stack) as soak:
            time.sleep(SOAK_SECONDS)
    finally:
        sampler.done.set()
        sampler.join()
    soak.verify()

    # Every job ran exactly once: nothing restarts here, so none is ever run again.
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
