"""What Postgres knows of its backups, for the metrics: the WAL archiver's counters, and the
backups that the backup service mirrors from the pgBackRest repository into
`backup.backups` (postgres/backup-scheduler; absent where no backup service runs)."""

from dataclasses import dataclass

from service.db.pool import Pool


@dataclass(frozen=True)
class ArchiveState:
    archived: int
    failed: int
    last_archived_at: float | None  # epoch seconds
    last_failed_at: float | None


async def archive_state(pool: Pool) -> ArchiveState:
    row = await pool.fetchrow(
        """SELECT archived_count, failed_count,
                  extract(epoch FROM last_archived_time)::float8 AS last_archived_at,
                  extract(epoch FROM last_failed_time)::float8 AS last_failed_at
           FROM pg_stat_archiver"""
    )
    assert row is not None
    return ArchiveState(
        row["archived_count"], row["failed_count"], row["last_archived_at"], row["last_failed_at"]
    )


async def newest_backups(pool: Pool) -> dict[str, float]:
    """When the newest backup of each type (full, diff, incr) finished, in epoch seconds."""
    if await pool.fetchval("SELECT to_regclass('backup.backups')") is None:
        return {}
    rows = await pool.fetch(
        """SELECT type, extract(epoch FROM max(stopped_at))::float8 AS stopped_at
           FROM backup.backups GROUP BY type"""
    )
    return {row["type"]: row["stopped_at"] for row in rows}
