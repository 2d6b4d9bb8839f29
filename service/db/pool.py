"""The asyncpg pool: opened with bounded retries while Postgres starts, closed with a bound, and
handed out to requests in turn."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from service.db.errors import DATABASE_UNAVAILABLE
from service.settings import Settings

log = logging.getLogger(__name__)

Pool = asyncpg.Pool
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _connect_options(settings: Settings) -> dict[str, Any]:
    password = settings.database_password
    return {
        "dsn": settings.database_url,
        "password": password.get_secret_value() if password else None,
        "timeout": settings.db_connect_timeout,
    }


async def connect(settings: Settings) -> asyncpg.Connection:
    """One dedicated connection (for LISTEN), outside the pool."""
    return await asyncpg.connect(**_connect_options(settings))


async def _init_connection(connection: asyncpg.Connection) -> None:
    """jsonb columns in and out as Python objects."""
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def _create_with_retries(settings: Settings) -> Pool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.db_startup_deadline
    delay = 0.25
    while True:
        try:
            return await asyncpg.create_pool(
                **_connect_options(settings),
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                command_timeout=settings.db_command_timeout,
                init=_init_connection,
            )
        except DATABASE_UNAVAILABLE as error:
            if loop.time() + delay > deadline:
                raise
            log.warning(
                "database not reachable yet, retrying",
                extra={"error": repr(error), "retry_in": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[Pool]:
    pool = await _create_with_retries(settings)
    log.info("database pool open", extra={"max_size": settings.db_pool_max_size})
    try:
        yield pool
    finally:
        # Shielded: a second cancellation must not leave connections open on the server.
        await asyncio.shield(_close(pool, settings.db_close_timeout))


async def _close(pool: Pool, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await pool.close()
        log.info("database pool closed")
    except TimeoutError:
        pool.terminate()
        log.warning("database pool close timed out; connections terminated")


class Turns:
    """The pool's connections for requests, first come, first served.

    asyncpg's pool lets a caller that arrives just as a connection is released take it ahead
    of those already waiting; under contention (more requests in flight than connections)
    some requests then wait far longer than the others. Requests take a turn here, in order,
    before they acquire, and no more of them acquire at once than the pool holds."""

    def __init__(self, pool: Pool, size: int) -> None:
        self.pool = pool
        self._turns = asyncio.Semaphore(size)  # FIFO: a release wakes the longest waiter

    @asynccontextmanager
    async def acquire(self, within: float) -> AsyncIterator[Connection]:
        """A connection within `within` seconds (TimeoutError otherwise), waiting in turn."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with asyncio.timeout_at(deadline):
            await self._turns.acquire()
        try:
            remaining = max(deadline - loop.time(), 0.001)
            async with self.pool.acquire(timeout=remaining) as connection:
                yield connection
        finally:
            self._turns.release()
