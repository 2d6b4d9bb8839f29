"""What a rate-limit decision costs per request: this process's token buckets against a
limit shared by every replica in Postgres (one UPSERT per request), on a real Postgres (the
stack's postgres:17 image, started by testcontainers). README "Rate limits" has the figures.

    uv run python -m scripts.ratelimit_cost [--requests N]

The shared variant is the cheapest one Postgres offers: an UNLOGGED table (no WAL; the buckets
need not survive a crash), its bucket arithmetic inside the UPSERT, and asynchronous commit.
It runs once sequentially (next to a bare round trip) and once with 32 requests in flight on
a pool of 10 (the app's), first spread over 1,000 keys and then all on one key (a flood:
every UPSERT then waits for the row lock of the one before it).
"""

import argparse
import asyncio
import os
import time

import asyncpg
from testcontainers.community.postgres import PostgresContainer

from service.domain.ratelimit import Policy, RateLimits

IN_FLIGHT = 32
POOL_SIZE = 10
RATE, BURST = 5.0, 10

SCHEMA = """
CREATE UNLOGGED TABLE rate_limits (
    identity text NOT NULL,
    kind text NOT NULL,
    tokens double precision NOT NULL,
    updated timestamptz NOT NULL,
    PRIMARY KEY (identity, kind)
)
"""
# Refill, then take a token when there is one; returns the tokens left (< 0: refused).
ADMIT = """
INSERT INTO rate_limits AS b (identity, kind, tokens, updated)
VALUES ($1, 'write', $2 - 1, clock_timestamp())
ON CONFLICT (identity, kind) DO UPDATE SET
    tokens = least($2, b.tokens + extract(epoch FROM clock_timestamp() - b.updated) * $3) - 1,
    updated = clock_timestamp()
RETURNING tokens
"""


def in_memory(requests: int) -> float:
    """Seconds per decision, over `requests` decisions spread over 1,000 identities."""
    limits = RateLimits({"read": Policy("reads", RATE, BURST)}, max_identities=100_000)
    started = time.perf_counter()
    for number in range(requests):
        limits.admit(f"key:{number % 1000}", "read")
    return (time.perf_counter() - started) / requests


async def shared(
    pool: asyncpg.Pool, requests: int, keys: int, in_flight: int, query: str = ADMIT
) -> float:
    """Seconds per decision (wall clock over all of them) with `in_flight` at once."""
    queue = iter(range(requests))

    async def client() -> None:
        for number in queue:
            async with pool.acquire() as connection:
                await connection.fetchval(query, f"key:{number % keys}", BURST, RATE)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return (time.perf_counter() - started) / requests


async def measure(url: str, requests: int) -> None:
    async with asyncpg.create_pool(
        url, min_size=POOL_SIZE, max_size=POOL_SIZE, server_settings={"synchronous_commit": "off"}
    ) as pool:
        await pool.execute(SCHEMA)
        await shared(pool, requests // 10, 1000, IN_FLIGHT)  # warm-up
        runs = {
            # The round trip alone, for comparison: what every request's own query costs too.
            "SELECT of its parameters, sequential": await shared(
                pool, requests, 1000, 1, "SELECT $1::text, $2::int, $3::float8"
            ),
            "shared, sequential": await shared(pool, requests, 1000, 1),
            f"shared, {IN_FLIGHT} in flight, 1,000 keys": await shared(
                pool, requests, 1000, IN_FLIGHT
            ),
            f"shared, {IN_FLIGHT} in flight, one key": await shared(pool, requests, 1, IN_FLIGHT),
        }
    print(f"in memory: {in_memory(requests * 100) * 1e6:.2f} us per decision")
    for name, seconds in runs.items():
        print(f"{name}: {seconds * 1e6:.0f} us per decision ({1 / seconds:,.0f} a second)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    arguments = parser.parse_args()
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    with PostgresContainer("postgres:17", driver=None) as postgres:
        asyncio.run(measure(postgres.get_connection_url(), arguments.requests))


if __name__ == "__main__":
    main()
