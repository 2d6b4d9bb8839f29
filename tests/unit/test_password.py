"""A rotated database password reaches new connections without a restart: the password file is
read for each one, a connection refused while the rotation is between its ALTER ROLE and its
rename waits for the new file, and the pool replaces its connections as they age."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.db.password import ROTATION_GRACE_SECONDS, Password
from service.db.pool import open_pool
from service.settings import Settings
from tests.unit.conftest import make_settings


class Role:
    """A login role of its own (roles are the cluster's, not a test database's), its password
    in a file as the stack keeps it."""

    def __init__(self, admin: asyncpg.Connection, database_url: str, file: Path) -> None:
        self.admin = admin
        self.name = f"rotation_{uuid.uuid4().hex[:12]}"
        self.file = file
        parts = urlsplit(database_url)
        self.url = urlunsplit(parts._replace(netloc=f"{self.name}@{parts.hostname}:{parts.port}"))

    async def set_password(self, password: str) -> None:
        # A literal: utility statements take no parameters. The test's own random password.
        await self.admin.execute(f"ALTER ROLE {self.name} PASSWORD '{password}'")

    def write(self, password: str) -> None:
        """As the rotation does: a new file under another name, renamed into place."""
        pending = self.file.with_name(f"{self.file.name}.new")
        pending.write_text(f"{password}\n")
        pending.replace(self.file)

    def settings(self, **overrides: object) -> Settings:
        return make_settings(self.url, database_password_file=self.file, **overrides)


@pytest.fixture
async def role(database_url: str, tmp_path: Path) -> AsyncIterator[Role]:
    admin = await asyncpg.connect(database_url)
    made = Role(admin, database_url, tmp_path / "db_password")
    try:
        await admin.execute(f"CREATE ROLE {made.name} LOGIN")
        first = uuid.uuid4().hex
        await made.set_password(first)
        made.write(first)
        yield made
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", made.name
        )
        await admin.execute(f"DROP ROLE {made.name}")
    finally:
        await admin.close()


async def whoami(connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> str:
    return str(await connection.fetchval("SELECT current_user"))


async def test_each_new_connection_reads_the_password_file(role: Role) -> None:
    password = Password(role.settings())
    before = await password.connect(dsn=role.url)
    rotated = uuid.uuid4().hex
    await role.set_password(rotated)
    role.write(rotated)
    after = await password.connect(dsn=role.url)
    try:
        assert await whoami(after) == role.name
        # Postgres checks a password when a session starts only: the older one carries on.
        assert await whoami(before) == role.name
    finally:
        await before.close()
        await after.close()


async def test_a_connection_refused_mid_rotation_waits_for_the_new_file(role: Role) -> None:
    rotated = uuid.uuid4().hex
    await role.set_password(rotated)  # the file still holds the old one, for a moment

    async def rename_later() -> None:
        await asyncio.sleep(ROTATION_GRACE_SECONDS / 3)
        role.write(rotated)

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        group.create_task(rename_later())
        connection = await Password(role.settings()).connect(dsn=role.url)
    try:
        assert await whoami(connection) == role.name
        assert time.monotonic() - started < ROTATION_GRACE_SECONDS
    finally:
        await connection.close()


async def test_a_wrong_password_is_refused_once_the_grace_is_over(role: Role) -> None:
    await role.set_password(uuid.uuid4().hex)  # and the file never follows
    started = time.monotonic()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await Password(role.settings()).connect(dsn=role.url)
    assert time.monotonic() - started >= ROTATION_GRACE_SECONDS


async def test_a_password_given_as_a_value_is_not_retried(role: Role) -> None:
    settings = make_settings(role.url, database_password="not-the-password")
    started = time.monotonic()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await Password(settings).connect(dsn=role.url)
    assert time.monotonic() - started < ROTATION_GRACE_SECONDS


async def test_the_pool_replaces_its_sessions_with_ones_on_the_new_password(role: Role) -> None:
    settings = role.settings(db_pool_min_size=1, db_pool_max_size=1, db_pool_max_queries=3)
    async with open_pool(settings) as pool:
        first = await pool.fetchval("SELECT pg_backend_pid()")
        rotated = uuid.uuid4().hex
        await role.set_password(rotated)
        role.write(rotated)
        pids = [await pool.fetchval("SELECT pg_backend_pid()") for _ in range(6)]
    # The session opened on the old password is gone after max_queries; its successors logged
    # in with the new one.
    assert first not in pids[-3:]
    assert len(set(pids)) >= 2
