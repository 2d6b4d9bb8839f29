"""Migrations that cannot silently hurt: a changed applied file is refused, a migration that
waits for a busy table fails in lock_timeout, and a no-transaction file can build an index
CONCURRENTLY. Each test runs the real files plus its own, copied to a directory of its own."""

import asyncio
import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from service.db.migrate import MIGRATIONS, MigrationError, apply_migrations
from service.settings import Settings
from tests.unit.conftest import make_settings


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A copy of service/db/migrations that a test may add to or change."""
    directory = tmp_path / "migrations"
    shutil.copytree(Path(str(MIGRATIONS)), directory)
    return directory


async def test_each_applied_file_is_recorded_with_its_checksum(
    settings: Settings, migrations: Path
) -> None:
    applied = await apply_migrations(settings, migrations)
    assert await apply_migrations(settings, migrations) == []
    connection = await asyncpg.connect(settings.database_url)
    try:
        rows = await connection.fetch("SELECT name, checksum FROM schema_migrations")
    finally:
        await connection.close()
    expected = {
        name: hashlib.sha256((migrations / name).read_bytes()).hexdigest() for name in applied
    }
    assert {row["name"]: row["checksum"] for row in rows} == expected


async def test_a_changed_applied_file_is_refused_by_name(
    settings: Settings, migrations: Path
) -> None:
    await apply_migrations(settings, migrations)
    changed = migrations / "0002_jobs.sql"
    changed.write_text(changed.read_text() + "\n-- an afterthought\n")
    with pytest.raises(MigrationError, match=r"have changed .*: 0002_jobs\.sql;"):
        await apply_migrations(settings, migrations)


async def test_files_applied_before_checksums_are_trusted_once(
    settings: Settings, migrations: Path
) -> None:
    await apply_migrations(settings, migrations)
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute("UPDATE schema_migrations SET checksum = NULL")
        assert await apply_migrations(settings, migrations) == []
        unrecorded = await connection.fetchval(
            "SELECT count(*) FROM schema_migrations WHERE checksum IS NULL"
        )
    finally:
        await connection.close()
    assert unrecorded == 0


async def test_a_migration_blocked_by_a_long_transaction_fails_within_lock_timeout(
    database_url: str, migrations: Path
) -> None:
    settings = make_settings(database_url, db_migration_lock_timeout=0.3)
    await apply_migrations(settings, migrations)
    (migrations / "0100_items_sku.sql").write_text("ALTER TABLE items ADD COLUMN sku text;\n")
    reader, writer = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        # A long read: its lock keeps any ALTER TABLE items waiting, and requests that need
        # the table queue behind the ALTER's place in the lock queue.
        transaction = reader.transaction()
        await transaction.start()
        await reader.fetch("SELECT * FROM items")
        loop = asyncio.get_running_loop()
        started = loop.time()
        migrating = asyncio.create_task(apply_migrations(settings, migrations))
        await asyncio.sleep(0.1)  # the ALTER waits for its lock
        try:
            async with asyncio.timeout(5):  # without lock_timeout it would wait for ever
                await writer.execute(
                    "INSERT INTO items (name, price_cents) VALUES ('written while migrating', 1)"
                )
        except TimeoutError:
            migrating.cancel()
            pytest.fail("a write queued behind the migration's lock for 5 s")
        written = loop.time() - started
        with pytest.raises(MigrationError, match=r"0100_items_sku\.sql waited longer than"):
            await migrating
        # The write waited for the migration's lock_timeout, not for the long read.
        assert written < 2, f"a write waited {written:.1f} s behind the migration"
        await transaction.rollback()
        # Nothing of the failed file remains, and it applies once the table is free.
        columns = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'sku'"
        assert await reader.fetchval(columns) == 0
        assert await apply_migrations(settings, migrations) == ["0100_items_sku.sql"]
        assert await reader.fetchval(columns) == 1
    finally:
        await reader.close()
        await writer.close()


async def test_a_no_transaction_file_builds_an_index_concurrently(
    settings: Settings, migrations: Path
) -> None:
    (migrations / "0100_items_price_index.sql").write_text(
        "-- migrate: no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_price_cents ON items (price_cents);\n"
    )
    assert "0100_items_price_index.sql" in await apply_migrations(settings, migrations)
    connection = await asyncpg.connect(settings.database_url)
    try:
        valid = await connection.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_price_cents'::regclass"
        )
    finally:
        await connection.close()
    assert valid is True


async def test_without_the_marker_a_concurrent_index_is_refused_and_nothing_is_recorded(
    settings: Settings, migrations: Path
) -> None:
    (migrations / "0100_items_price_index.sql").write_text(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_price_cents ON items (price_cents);\n"
    )
    with pytest.raises(MigrationError, match=r"0100_items_price_index\.sql failed"):
        await apply_migrations(settings, migrations)
    # The files before it were applied; the failed one can be fixed and applied later.
    assert "0100_items_price_index.sql" in await apply_migrations(
        settings, _with_marker(migrations / "0100_items_price_index.sql")
    )


def _with_marker(path: Path) -> Path:
    path.write_text("-- migrate: no-transaction\n" + path.read_text())
    return path.parent
