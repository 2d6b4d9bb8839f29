"""SQL for items. Every statement is parameterised; column names come from this module only."""

from typing import Any

import asyncpg

from service.db.pool import Connection
from service.models import Item

COLUMNS = "id, name, description, price_cents, created_at, updated_at"
UPDATABLE = frozenset({"name", "description", "price_cents"})

DuplicateName = asyncpg.UniqueViolationError


async def insert(connection: Connection, name: str, description: str | None, price: int) -> Item:
    row = await connection.fetchrow(
        "INSERT INTO items (name, description, price_cents) VALUES ($1, $2, $3) "
        f"RETURNING {COLUMNS}",
        name,
        description,
        price,
    )
    assert row is not None
    return Item(**row)


async def get(connection: Connection, item_id: int) -> Item | None:
    row = await connection.fetchrow(f"SELECT {COLUMNS} FROM items WHERE id = $1", item_id)
    return Item(**row) if row else None


async def list_after(connection: Connection, after: int, limit: int) -> list[Item]:
    """Keyset pagination: rows with id > after, in id order (an index range scan)."""
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM items WHERE id > $1 ORDER BY id LIMIT $2",
        after,
        limit,
    )
    return [Item(**row) for row in rows]


async def update(connection: Connection, item_id: int, changes: dict[str, Any]) -> Item | None:
    unknown = changes.keys() - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    names = sorted(changes)
    if not names:
        return await get(connection, item_id)
    assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(names, start=2))
    row = await connection.fetchrow(
        f"UPDATE items SET {assignments}, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
        item_id,
        *(changes[name] for name in names),
    )
    return Item(**row) if row else None


async def delete(connection: Connection, item_id: int) -> bool:
    status = await connection.execute("DELETE FROM items WHERE id = $1", item_id)
    return bool(status == "DELETE 1")
