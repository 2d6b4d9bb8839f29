"""Start-up and shutdown: migrations under a lock, job release at shutdown, supervision."""

import asyncio
import logging

import asyncpg
import httpx
import pytest

from service.background.supervisor import supervise
from service.db.migrate import apply_migrations
from service.db.pool import open_pool
from service.main import create_app
from service.settings import Settings
from tests.unit.conftest import bearer, make_key, make_settings, run_lifespan

MIGRATIONS = [
    "0001_items.sql",
    "0002_jobs.sql",
    "0003_idempotency_keys.sql",
    "0004_jobs_traceparent.sql",
    "0005_api_keys.sql",
]


async def test_replicas_starting_together_apply_migrations_once(database_url: str) -> None:
    settings = make_settings(database_url)
    applied = await asyncio.gather(apply_migrations(settings), apply_migrations(settings))
    async with open_pool(settings) as pool:
        rows = await pool.fetch("SELECT name FROM schema_migrations ORDER BY name")
    assert sorted(applied, key=len) == [[], MIGRATIONS]
    assert [row["name"] for row in rows] == MIGRATIONS


async def test_two_apps_start_together_on_a_fresh_database(database_url: str) -> None:
    apps = [create_app(make_settings(database_url)) for _ in range(2)]
    async with run_lifespan(apps[0]), run_lifespan(apps[1]):
        pass
    connection = await asyncpg.connect(database_url)
    try:
        applied = await connection.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await connection.close()
    assert applied == len(MIGRATIONS)


async def test_shutdown_releases_running_jobs_and_closes_the_pool(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(settings)
    async with run_lifespan(app) as manager:
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app),
            base_url="http://t",
            headers=bearer(await make_key(settings.database_url)),
        )
        async with http:
            job = await http.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 60}})
            job_id = job.json()["id"]
            async with asyncio.timeout(10):
                while (await http.get(f"/jobs/{job_id}")).json()["state"] != "running":
                    await asyncio.sleep(0.05)
    connection = await asyncpg.connect(settings.database_url)
    try:
        state = await connection.fetchval("SELECT state FROM jobs WHERE id = $1::uuid", job_id)
    finally:
        await connection.close()
    assert state == "queued"
    messages = [record.message for record in caplog.records]
    for expected in (
        "shutdown: cancelling background tasks",
        "job released on cancellation",
        "shutdown: background tasks stopped",
        "database pool closed",
        "shutdown complete",
    ):
        assert expected in messages


async def test_startup_gives_up_when_the_database_never_comes() -> None:
    settings = Settings(
        database_url="postgresql://app@127.0.0.1:9/app",  # discard port: always refused
        db_startup_deadline=1.0,
    )
    app = create_app(settings)
    with pytest.raises(ConnectionRefusedError):
        async with asyncio.timeout(10), run_lifespan(app):
            pass


async def test_supervisor_restarts_a_crashed_task(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    restarted = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        restarted.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("flaky", flaky, max_backoff=0.1))
    await asyncio.wait_for(restarted.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == 3
    crashes = [r for r in caplog.records if r.message == "background task crashed"]
    assert len(crashes) == 2
    assert crashes[0].exc_info is not None
