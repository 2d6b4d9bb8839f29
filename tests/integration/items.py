"""Rows written through the app and read back from Postgres: what the restore drills compare."""

from tests.integration.stack import Stack


def create(stack: Stack, names: list[str]) -> None:
    """One item per name, through the edge, each acknowledged with 201."""
    with stack.client() as client:
        for name in names:
            answer = client.post("/items", json={"name": name, "price_cents": 1})
            assert answer.status_code == 201, answer.text


def existing(stack: Stack, prefix: str) -> set[str]:
    """The names of the items in the database that start with the prefix."""
    rows = stack.psql(f"SELECT name FROM items WHERE name LIKE '{prefix}%'")
    return set(rows.split())


def database_now(stack: Stack) -> str:
    """The database's clock, as `scripts/restore --to` takes it."""
    return stack.psql("SELECT now()")
