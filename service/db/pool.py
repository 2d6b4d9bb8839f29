"""The asyncpg pool: opened with bounded retries while Postgres starts, closed with a bound, and
handed out to requests in turn, failing fast while Postgres cannot be reached."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from typing import Any

import asyncpg

from service.db.errors import DATABASE_UNAVAILABLE, DatabaseUnreachable
from service.db.password import Password
from service.settings import Settings

log = logging.getLogger(__name__)

Pool = asyncpg.Pool
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _connect_options(settings: Settings) -> dict[str, Any]:
    """What every connection is made with; the password is Password's (read per connection)."""
    return {"dsn": settings.database_url, "timeout": settings.db_connect_timeout}


# A dedicated connection has nothing to flush: a slow close (say, while a query is being
# cancelled) must not hold up shutdown; past this the socket is just closed.
DEDICATED_CLOSE_SECONDS = 2.0


@asynccontextmanager
async def dedicated_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, outside the pool: for LISTEN, and for the migrations (whose
    session settings and advisory lock must not reach a pooled connection)."""
    connection = await Password(settings).connect(**_connect_options(settings))
    try:
        yield connection
    finally:
        await asyncio.shield(_close_quietly(connection, DEDICATED_CLOSE_SECONDS))


async def _close_quietly(connection: asyncpg.Connection, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            await connection.close()
    except (OSError, TimeoutError, asyncpg.InterfaceError):
        connection.terminate()


async def _reset_nothing_more(connection: asyncpg.Connection) -> None:
    """What the pool does to a released connection, besides asyncpg's own rollback of a
    transaction left open: nothing. asyncpg's default sends a reset query (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL), one more round trip per request, for session state that
    pooled connections never hold here: advisory locks are transaction-level, LISTEN and the
    migrations' settings live on dedicated connections, and nothing runs SET outside a
    transaction (tests/unit/test_turns.py checks the round trip is gone)."""


async def _init_connection(connection: asyncpg.Connection) -> None:
    """jsonb columns in and out as Python objects."""
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


class Reachability:
    """Whether Postgres took the pool's last new connection.

    The pool makes every new connection through `connect` (a request's, a worker's, or the
    pool's own upkeep of its minimum size). One that fails (refused, a name that no longer
    resolves, a timeout, a Postgres shutting down) marks the database unreachable until one
    succeeds again."""

    def __init__(self, connect: Callable[..., Awaitable[asyncpg.Connection]] = asyncpg.connect):
        self.reachable = True
        self._connect = connect

    async def connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        try:
            connection = await self._connect(*args, **kwargs)
        except Exception:
            self.reachable = False
            raise
        self.reachable = True
        return connection


async def _create_with_retries(settings: Settings, reachability: Reachability) -> Pool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.db_startup_deadline
    delay = 0.25
    while True:
        try:
            return await asyncpg.create_pool(
                **_connect_options(settings),
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                max_queries=settings.db_pool_max_queries,
                command_timeout=settings.db_command_timeout,
                init=_init_connection,
                reset=_reset_nothing_more,
                connect=reachability.connect,
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
async def open_pool(
    settings: Settings, reachability: Reachability | None = None
) -> AsyncIterator[Pool]:
    reachability = reachability or Reachability(Password(settings).connect)
    pool = await _create_with_retries(settings, reachability)
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


async def ping(pool: Pool, within: float) -> None:
    """One round trip to Postgres, a pool connection included, within `within` seconds; one of
    DATABASE_UNAVAILABLE otherwise."""
    async with asyncio.timeout(within), pool.acquire(timeout=within) as connection:
        await connection.fetchval("SELECT 1")


class Turns:
    """The pool's connections for requests, first come, first served, and none while Postgres
    is unreachable.

    asyncpg's pool lets a caller that arrives just as a connection is released take it ahead
    of those already waiting; under contention (more requests in flight than connections)
    some requests then wait far longer than the others. Requests take a turn here, in order,
    before they acquire, and no more of them acquire at once than the pool holds.

    After a new connection failed, one request at a time tries again (it waits for its
    connection as long as ever) and the others fail at once with DatabaseUnreachable, rather
    than each waiting out its bound while Postgres is away: a client hears 503 in
    milliseconds, and the turns do not fill up with requests that cannot be served."""

    def __init__(
        self,
        pool: Pool,
        size: int,
        reachability: Reachability,
        connect_timeout: float,
        acquire_span: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.pool = pool
        self._acquire_span = acquire_span  # a span around the wait, when traced
        self._turns = asyncio.Semaphore(size)  # FIFO: a release wakes the longest waiter
        self._reachability = reachability
        self._connect_timeout = connect_timeout
        self._probing = False  # a request is trying Postgres again

    @asynccontextmanager
    async def acquire(self, within: float) -> AsyncIterator[Connection]:
        """A connection within `within` seconds, plus the connect timeout when the connection
        must be made (TimeoutError otherwise), waiting in turn."""
        probe = not self._reachability.reachable
        if probe:
            if self._probing:
                raise DatabaseUnreachable("database unreachable")
            self._probing = True
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            async with AsyncExitStack() as held:
                with self._acquire_span():  # the wait: for a turn, then for a connection
                    async with asyncio.timeout_at(deadline):
                        await self._turns.acquire()
                    held.callback(self._turns.release)
                    # A connection being made keeps its own timeout, so that its failure (not
                    # the acquire's) is what tells the Reachability that Postgres is away.
                    bound = max(deadline - loop.time(), 0.0) + self._connect_timeout
                    connection = await held.enter_async_context(self.pool.acquire(timeout=bound))
                if probe:
                    self._reachability.reachable = True  # the pool still had one
                    self._probing, probe = False, False
                yield connection
        finally:
            if probe:
                self._probing = False
