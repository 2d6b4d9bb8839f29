"""Which driver errors mean "the database is unreachable right now" (answered with 503)."""

import asyncpg


class DatabaseUnreachable(ConnectionError):
    """The last new connection to Postgres failed, and another attempt is already under way."""


DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; DatabaseUnreachable
    TimeoutError,  # connect, acquire or command timeout
    asyncpg.PostgresConnectionError,  # class 08: the connection broke
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, cannot connect now
    # A pooled connection that Postgres terminated while it sat idle: the next query on it
    # fails in asyncpg's protocol state machine ("cannot switch to state ...").
    asyncpg.exceptions.InternalClientError,
)
