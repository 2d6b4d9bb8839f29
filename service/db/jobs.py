"""SQL for the job queue: enqueue, claim with a lease, renew, finish, release.

A claim takes the oldest runnable job with FOR UPDATE SKIP LOCKED, so concurrent workers
never block on or double-claim a row. Runnable means queued and due, or running with an
expired lease (its worker's process died). Every later write is guarded by the lease owner,
so a worker that lost its lease cannot overwrite the new owner's work.
"""

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from service.db.pool import Connection, Pool
from service.models import ClaimedJob, Job

COLUMNS = (
    "id, kind, payload, state, attempts, max_attempts, result, error, "
    "created_at, updated_at, finished_at"
)
RETRY_BACKOFF_CAP_SECONDS = 300


async def insert(
    connection: Connection | Pool,
    kind: str,
    payload: dict[str, Any],
    max_attempts: int,
    traceparent: str | None = None,
) -> Job:
    row = await connection.fetchrow(
        "INSERT INTO jobs (kind, payload, max_attempts, traceparent) VALUES ($1, $2, $3, $4) "
        f"RETURNING {COLUMNS}",
        kind,
        payload,
        max_attempts,
        traceparent,
    )
    assert row is not None
    return Job(**row)


async def get(connection: Connection | Pool, job_id: UUID) -> Job | None:
    row = await connection.fetchrow(f"SELECT {COLUMNS} FROM jobs WHERE id = $1", job_id)
    return Job(**row) if row else None


async def claim(pool: Pool, owner: str, lease_seconds: float) -> ClaimedJob | None:
    row = await pool.fetchrow(
        """
        WITH next AS (
            SELECT id FROM jobs
            WHERE (state = 'queued' AND run_after <= now())
               OR (state = 'running' AND lease_expires_at < now())
            ORDER BY created_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs SET state = 'running',
                        attempts = jobs.attempts + 1,
                        lease_owner = $1,
                        lease_expires_at = now() + make_interval(secs => $2),
                        updated_at = now()
        FROM next WHERE jobs.id = next.id
        RETURNING jobs.id, jobs.kind, jobs.payload, jobs.attempts, jobs.max_attempts,
                  jobs.traceparent
        """,
        owner,
        lease_seconds,
    )
    return ClaimedJob(**row) if row else None


async def renew_lease(pool: Pool, job_id: UUID, owner: str, lease_seconds: float) -> bool:
    """False when the lease is no longer ours."""
    renewed = await pool.fetchval(
        """UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
           WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING true""",
        job_id,
        owner,
        lease_seconds,
    )
    return bool(renewed)


async def complete(pool: Pool, job_id: UUID, owner: str, result: dict[str, Any]) -> bool:
    done = await pool.fetchval(
        """UPDATE jobs SET state = 'done', result = $3, error = NULL, lease_owner = NULL,
                          lease_expires_at = NULL, finished_at = now(), updated_at = now()
           WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING true""",
        job_id,
        owner,
        result,
    )
    return bool(done)


async def fail(pool: Pool, job_id: UUID, owner: str, error: str) -> str | None:
    """Requeues with exponential backoff while attempts remain, else marks failed.

    Returns the new state, or None when the lease was no longer ours.
    """
    state: str | None = await pool.fetchval(
        """UPDATE jobs SET
               state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
               run_after = now() + make_interval(secs => least(power(2, attempts), $4)),
               finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
               error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
           WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING state""",
        job_id,
        owner,
        error,
        RETRY_BACKOFF_CAP_SECONDS,
    )
    return state


async def release(pool: Pool, job_id: UUID, owner: str) -> bool:
    """Puts an interrupted job back, runnable now; the interrupted attempt does not count."""
    released = await pool.fetchval(
        """UPDATE jobs SET state = 'queued', attempts = greatest(attempts - 1, 0),
                          run_after = now(), lease_owner = NULL, lease_expires_at = NULL,
                          updated_at = now()
           WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING true""",
        job_id,
        owner,
    )
    return bool(released)


@dataclass(frozen=True)
class QueueState:
    queued: int
    running: int
    # How long the longest-waiting runnable job has waited for a worker: since it became due
    # (created, released, or its retry's backoff ended); 0 when none is due.
    oldest_due_wait_seconds: float


async def queue_state(pool: Pool) -> QueueState:
    row = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE state = 'queued') AS queued,
                  count(*) FILTER (WHERE state = 'running') AS running,
                  coalesce(extract(epoch FROM now() - min(run_after)
                               FILTER (WHERE state = 'queued' AND run_after <= now())), 0
                  )::float8 AS oldest_due_wait_seconds
           FROM jobs WHERE state IN ('queued', 'running')"""
    )
    assert row is not None
    return QueueState(row["queued"], row["running"], row["oldest_due_wait_seconds"])
