"""Requests take the pool's connections in turn: first come, first served, within a bound,
and fail at once while Postgres cannot be reached."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from service.db.errors import DatabaseUnreachable
from service.db.pool import Pool, Reachability, Turns, open_pool
from tests.unit.conftest import make_settings

CONNECT_TIMEOUT = 0.3


class Outage:
    """Postgres as the pool's new connections see it. The unit tests share one Postgres that
    they cannot stop, so an outage here is a connect that waits out its timeout, as one to a
    name that no longer resolves or to a host that is down does (the integration test
    test_db_outage_edge.py stops the real one)."""

    def __init__(self) -> None:
        self.down = False
        self.attempts = 0

    async def connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        self.attempts += 1
        if self.down:
            await asyncio.sleep(CONNECT_TIMEOUT)
            raise TimeoutError
        connection: asyncpg.Connection = await asyncpg.connect(*args, **kwargs)
        return connection


@pytest.fixture
def outage() -> Outage:
    return Outage()


@pytest.fixture
def reachability(outage: Outage) -> Reachability:
    return Reachability(outage.connect)


@pytest.fixture
async def pool(database_url: str, reachability: Reachability) -> AsyncIterator[Pool]:
    # No minimum: the pool makes a connection only when a test asks for one.
    settings = make_settings(database_url, db_pool_min_size=0)
    async with open_pool(settings, reachability) as pool:
        yield pool


def turns_of(pool: Pool, reachability: Reachability, size: int) -> Turns:
    return Turns(pool, size, reachability, CONNECT_TIMEOUT)


async def test_waiting_requests_get_a_connection_in_the_order_they_came(
    pool: Pool, reachability: Reachability
) -> None:
    turns = turns_of(pool, reachability, size=1)
    order: list[str] = []

    async def request(name: str) -> None:
        async with turns.acquire(within=5) as connection:
            order.append(name)
            await connection.fetchval("SELECT 1")

    async with turns.acquire(within=5):
        waiting = [asyncio.create_task(request(f"waiting-{n}")) for n in range(3)]
        await asyncio.sleep(0.05)  # all three wait for their turn
    # Arrives as the connection is released: it queues behind the waiters. (What the order
    # buys under real contention, p99, is measured by scripts/bench, not here.)
    late = asyncio.create_task(request("late"))
    await asyncio.gather(*waiting, late)
    assert order == ["waiting-0", "waiting-1", "waiting-2", "late"]


async def test_a_request_waits_no_longer_than_its_bound(
    pool: Pool, reachability: Reachability
) -> None:
    turns = turns_of(pool, reachability, size=1)
    async with turns.acquire(within=5):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with turns.acquire(within=0.2):
                pass
        assert 0.2 <= loop.time() - started < 1
    # The turn that timed out was never taken, and the first one was given back.
    async with turns.acquire(within=1) as connection:
        assert await connection.fetchval("SELECT 1") == 1


async def test_while_postgres_is_away_one_request_tries_and_the_others_fail_at_once(
    pool: Pool, reachability: Reachability, outage: Outage
) -> None:
    turns = turns_of(pool, reachability, size=4)
    outage.down = True
    with pytest.raises(TimeoutError):  # the first learns it the slow way
        async with turns.acquire(within=5):
            pass
    assert not reachability.reachable

    loop = asyncio.get_running_loop()

    async def request() -> float:
        started = loop.time()
        try:
            async with turns.acquire(within=5):
                pass
        except (TimeoutError, DatabaseUnreachable):
            pass
        return loop.time() - started

    probe = asyncio.create_task(request())
    await asyncio.sleep(0.05)  # the probe waits for its connection
    attempts = outage.attempts
    with pytest.raises(DatabaseUnreachable):
        async with turns.acquire(within=5):
            pass
    others = await asyncio.gather(*(request() for _ in range(8)))
    assert max(others) < 0.05, "the others waited for a connection"
    assert outage.attempts == attempts, "only the probe tried to connect"
    assert await probe >= CONNECT_TIMEOUT

    outage.down = False  # Postgres is back: the next request is the probe, and succeeds
    async with turns.acquire(within=5) as connection:
        assert await connection.fetchval("SELECT 1") == 1
    assert reachability.reachable
    async with asyncio.TaskGroup() as group:
        served = [group.create_task(_select_one(turns)) for _ in range(8)]
    assert [task.result() for task in served] == [1] * 8


async def _select_one(turns: Turns) -> int:
    async with turns.acquire(within=5) as connection:
        value: int = await connection.fetchval("SELECT 1")
        return value


async def test_a_released_connection_costs_no_reset_query_and_rolls_back(pool: Pool) -> None:
    sent: list[str] = []
    async with pool.acquire() as connection:
        connection.add_query_logger(lambda record: sent.append(record.query))
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("CREATE TEMPORARY TABLE left_open (id int)")
    # Released mid-transaction (as a cancelled request's connection can be): rolled back, and
    # nothing else went out for it.
    assert sent == ["BEGIN;", "CREATE TEMPORARY TABLE left_open (id int)", "ROLLBACK"]
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT to_regclass('left_open')") is None
