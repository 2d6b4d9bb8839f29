"""In-process tests: the app with its lifespan, on httpx's ASGI transport, against a real
Postgres (the stack's postgres:17 image) started once per session by testcontainers.

Each test gets a database of its own, so tests never see each other's rows.
"""

import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp
from testcontainers.community.postgres import PostgresContainer

from service.db.migrate import apply_migrations
from service.db.pool import Pool, open_pool
from service.domain.keys import KeyService
from service.logs import JsonFormatter
from service.main import create_app
from service.models import Scope
from service.settings import Settings
from tests.project import HYPERCORN

POSTGRES_IMAGE = "postgres:17"
# The bounds the app has in production: Hypercorn's shutdown_timeout, and start-up room for
# the pool and the migrations (asgi-lifespan's default is 5 s for both).
SHUTDOWN_TIMEOUT = HYPERCORN["shutdown_timeout"]
STARTUP_TIMEOUT = 30


def run_lifespan(app: ASGIApp) -> LifespanManager:
    return LifespanManager(app, startup_timeout=STARTUP_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresContainer]:
    with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
        yield container


@pytest.fixture
async def database_url(postgres: PostgresContainer) -> AsyncIterator[str]:
    admin_url = postgres.get_connection_url()
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Test settings: short intervals so that tests wait milliseconds, not seconds."""
    values: dict[str, object] = {
        "database_url": database_url,
        "job_poll_interval": 0.1,
        "job_lease_seconds": 3.0,
        "db_startup_deadline": 10.0,
        "stats_interval": 0.5,
        # Tests send requests far faster than any caller may: test_rate_limits.py turns them on.
        "rate_limits": False,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


async def make_key(
    database_url: str, name: str = "tests", scopes: list[Scope] | None = None
) -> str:
    """A key in a migrated database (the app's lifespan migrates), with every scope by default."""
    connection = await asyncpg.connect(database_url)
    try:
        _, key = await KeyService(connection).create(name, scopes or list(Scope))
    finally:
        await connection.close()
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def keyed_client(app: ASGIApp, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """`app` running, and a client sending a key of every scope, as an API user would."""
    async with run_lifespan(app) as manager:
        key = await make_key(database_url)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app),
            base_url="http://testserver",
            headers=bearer(key),
        ) as http:
            yield http


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with keyed_client(create_app(settings), settings.database_url) as http:
        yield http


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    """A migrated database and a pool on it, with no app (and so no app workers) running."""
    async with open_pool(settings) as test_pool:
        await apply_migrations(settings)
        yield test_pool


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """A JSON handler on the root logger, present before the lifespan starts (as the app's)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
