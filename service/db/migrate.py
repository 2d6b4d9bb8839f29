"""Applies migrations/*.sql in name order, each once, on a connection of its own under an
advisory lock.

Replicas that start together queue on the lock; the first applies, the others find the work
done. Each file runs in its own transaction with its bookkeeping row (its name and SHA-256), so
a failed file leaves nothing half-applied. A file whose first line is `-- migrate:
no-transaction` runs outside one, for what Postgres cannot do in a transaction (`CREATE INDEX
CONCURRENTLY`); it must hold one statement that can run again (`IF NOT EXISTS`), as a crash
between the statement and its row repeats it.

Start-up refuses to run when a file already applied has changed since: the database would not
be what the files say. While migrating, `lock_timeout` and `statement_timeout` are set, so a
migration that waits for a busy table fails in seconds, and start-up with it, instead of
queueing every request on that table behind the lock it waits for.
"""

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from service.db.pool import dedicated_connection
from service.settings import Settings

log = logging.getLogger(__name__)

# Any constant unique to this application; pg_advisory_lock takes a bigint.
MIGRATION_LOCK_KEY = 0x5E7_1CE_D8
MIGRATIONS = resources.files("service.db") / "migrations"
NO_TRANSACTION = "-- migrate: no-transaction"


class MigrationError(RuntimeError):
    """Start-up cannot go on: a migration failed, or an applied one has changed."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def in_transaction(self) -> bool:
        return self.sql.split("\n", 1)[0].strip() != NO_TRANSACTION


def read_migrations(directory: Traversable = MIGRATIONS) -> list[Migration]:
    files = sorted(
        (f for f in directory.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [Migration(f.name, f.read_text()) for f in files]


async def apply_migrations(settings: Settings, directory: Traversable = MIGRATIONS) -> list[str]:
    """Returns the names of the files applied by this call."""
    migrations = read_migrations(directory)
    async with dedicated_connection(settings) as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            applied = await _applied(connection)
            _refuse_changed(migrations, applied)
            await _backfill_checksums(connection, migrations, applied)
            # Set after the advisory lock: replicas queueing on it are not waiting on a table.
            await _set_timeouts(connection, settings)
            return [
                await _apply(connection, migration)
                for migration in migrations
                if migration.name not in applied
            ]
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _applied(connection: asyncpg.Connection) -> dict[str, str | None]:
    """The applied files and their checksums (None: applied before checksums were recorded)."""
    await connection.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               name       text PRIMARY KEY,
               applied_at timestamptz NOT NULL DEFAULT now());
           ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text"""
    )
    rows = await connection.fetch("SELECT name, checksum FROM schema_migrations")
    return {row["name"]: row["checksum"] for row in rows}


def _refuse_changed(migrations: list[Migration], applied: dict[str, str | None]) -> None:
    changed = [m.name for m in migrations if applied.get(m.name) not in (None, m.checksum)]
    if changed:
        raise MigrationError(
            f"applied migrations have changed since they were applied: {', '.join(changed)}; "
            "restore the applied text and put the change in a new file"
        )
    # The database is ahead of this release (a rollback after a migration): expected, as
    # migrations are written to keep the previous release working.
    unknown = sorted(set(applied) - {m.name for m in migrations})
    if unknown:
        log.warning("applied migrations this release does not have", extra={"names": unknown})


async def _backfill_checksums(
    connection: asyncpg.Connection, migrations: list[Migration], applied: dict[str, str | None]
) -> None:
    """Files applied before checksums were recorded are trusted as they are now, once."""
    for migration in migrations:
        if migration.name in applied and applied[migration.name] is None:
            await connection.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE name = $1",
                migration.name,
                migration.checksum,
            )


async def _set_timeouts(connection: asyncpg.Connection, settings: Settings) -> None:
    for name, seconds in (
        ("lock_timeout", settings.db_migration_lock_timeout),
        ("statement_timeout", settings.db_migration_statement_timeout),
    ):
        await connection.execute(
            "SELECT set_config($1, $2, false)", name, f"{round(seconds * 1000)}ms"
        )


async def _apply(connection: asyncpg.Connection, migration: Migration) -> str:
    record = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"
    try:
        if migration.in_transaction:
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(record, migration.name, migration.checksum)
        else:
            await connection.execute(migration.sql)
            await connection.execute(record, migration.name, migration.checksum)
    except asyncpg.exceptions.LockNotAvailableError as error:
        raise MigrationError(
            f"migration {migration.name} waited longer than lock_timeout for a lock ({error}); "
            "a long transaction holds the table: retry the deploy when it has finished"
        ) from error
    except asyncpg.exceptions.QueryCanceledError as error:
        raise MigrationError(
            f"migration {migration.name} ran longer than statement_timeout ({error}); "
            "raise APP_DB_MIGRATION_STATEMENT_TIMEOUT, or SET statement_timeout in the file"
        ) from error
    except asyncpg.PostgresError as error:
        raise MigrationError(f"migration {migration.name} failed: {error!r}") from error
    log.info(
        "migration applied",
        extra={"migration": migration.name, "in_transaction": migration.in_transaction},
    )
    return migration.name
