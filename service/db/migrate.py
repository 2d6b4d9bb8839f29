"""Applies migrations/*.sql in name order, each once, under an advisory lock.

Replicas that start together queue on the lock; the first applies, the others find the work
done. Each file runs in its own transaction with its bookkeeping row, so a failed file leaves
nothing half-applied.
"""

import logging
from importlib import resources

from service.db.pool import Pool

log = logging.getLogger(__name__)

# Any constant unique to this application; pg_advisory_lock takes a bigint.
MIGRATION_LOCK_KEY = 0x5E7_1CE_D8
MIGRATIONS = resources.files("service.db") / "migrations"


async def apply_migrations(pool: Pool) -> list[str]:
    """Returns the names of the files applied by this call."""
    applied: list[str] = []
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await connection.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       name       text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row["name"] for row in await connection.fetch("SELECT name FROM schema_migrations")
            }
            for migration in sorted(MIGRATIONS.iterdir(), key=lambda f: f.name):
                if not migration.name.endswith(".sql") or migration.name in done:
                    continue
                async with connection.transaction():
                    await connection.execute(migration.read_text())
                    await connection.execute(
                        "INSERT INTO schema_migrations (name) VALUES ($1)", migration.name
                    )
                log.info("migration applied", extra={"migration": migration.name})
                applied.append(migration.name)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied
