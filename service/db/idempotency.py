"""SQL for the responses stored under Idempotency-Key values (see domain/idempotency.py)."""

from service.db.pool import Connection, Pool
from service.models import IdempotencyRecord, StoredResponse

COLUMNS = "fingerprint, status, body, location"


async def try_lock(connection: Connection, key: str) -> bool:
    """The key's transaction-level advisory lock, or False at once while another transaction
    holds it: a concurrent duplicate is refused instead of queueing on the primary key."""
    locked = await connection.fetchval(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", key
    )
    return bool(locked)


async def get(connection: Connection, key: str) -> IdempotencyRecord | None:
    """The key's record unless expired: an expired one counts as absent before it is purged."""
    row = await connection.fetchrow(
        f"SELECT {COLUMNS} FROM idempotency_keys WHERE key = $1 AND expires_at > now()", key
    )
    return IdempotencyRecord(**row) if row else None


async def store(
    connection: Connection, key: str, fingerprint: str, response: StoredResponse, ttl: float
) -> None:
    """Inserts the record, or replaces an expired one not purged yet (the caller holds the
    key's lock and found no live record)."""
    await connection.execute(
        """INSERT INTO idempotency_keys (key, fingerprint, status, body, location, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
           ON CONFLICT (key) DO UPDATE SET
               (fingerprint, status, body, location, created_at, expires_at) =
               (EXCLUDED.fingerprint, EXCLUDED.status, EXCLUDED.body, EXCLUDED.location,
                EXCLUDED.created_at, EXCLUDED.expires_at)""",
        key,
        fingerprint,
        response.status,
        response.body,
        response.location,
        ttl,
    )


async def delete_expired(pool: Pool, limit: int) -> int:
    """At most `limit` expired records; rows a request is replacing right now are skipped."""
    status = await pool.execute(
        """DELETE FROM idempotency_keys WHERE key IN (
               SELECT key FROM idempotency_keys WHERE expires_at <= now()
               ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)""",
        limit,
    )
    return int(status.removeprefix("DELETE "))
