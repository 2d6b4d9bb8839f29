"""SQL for API keys. Only digests are stored; a key is found by its public id."""

from datetime import datetime

import asyncpg

from service.db.pool import Connection
from service.models import ApiKey, Scope, StoredKey

COLUMNS = "name, scopes, created_at, expires_at, revoked_at"

DuplicateName = asyncpg.UniqueViolationError


async def insert(
    connection: Connection,
    public_id: str,
    digest: bytes,
    name: str,
    scopes: list[Scope],
    expires_at: datetime | None,
) -> ApiKey:
    row = await connection.fetchrow(
        "INSERT INTO api_keys (public_id, digest, name, scopes, expires_at) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}",
        public_id,
        digest,
        name,
        [str(scope) for scope in scopes],
        expires_at,
    )
    assert row is not None
    return ApiKey(**row)


async def find_unrevoked(connection: Connection, public_id: str) -> StoredKey | None:
    row = await connection.fetchrow(
        "SELECT digest, name, scopes, expires_at FROM api_keys "
        "WHERE public_id = $1 AND revoked_at IS NULL",
        public_id,
    )
    return StoredKey(**row) if row else None


async def list_all(connection: Connection) -> list[ApiKey]:
    rows = await connection.fetch(f"SELECT {COLUMNS} FROM api_keys ORDER BY name, created_at")
    return [ApiKey(**row) for row in rows]


async def revoke(connection: Connection, name: str) -> ApiKey | None:
    row = await connection.fetchrow(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL "
        f"RETURNING {COLUMNS}",
        name,
    )
    return ApiKey(**row) if row else None
