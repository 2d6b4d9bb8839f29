"""The metrics the alert rules (prometheus/alerts.yml) read that the app computes itself: the
oldest due job's wait, readiness, and job outcomes counted from zero."""

import asyncio

import httpx

from service.db import jobs as job_queries
from service.db.pool import Pool
from service.draining import Draining
from service.main import create_app
from service.settings import Settings
from tests.unit.conftest import make_settings, run_lifespan


async def metrics_text(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).text


async def until_metric(client: httpx.AsyncClient, line: str, within: float = 10) -> str:
    """The metrics page once it shows `line` (the gauges refresh every stats_interval)."""
    async with asyncio.timeout(within):
        while line not in (text := await metrics_text(client)):
            await asyncio.sleep(0.1)
    return text


def sample(text: str, name: str) -> float:
    (value,) = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(value)


async def test_the_oldest_due_job_counts_from_when_it_became_due(pool: Pool) -> None:
    assert await job_queries.queue_state(pool) == job_queries.QueueState(0, 0, 0.0)
    # A retry in its backoff is queued but not due: it is waiting for nobody.
    await pool.execute(
        """INSERT INTO jobs (kind, payload, state, run_after)
           VALUES ('sleep', '{}', 'queued', now() + interval '1 hour')"""
    )
    assert await job_queries.queue_state(pool) == job_queries.QueueState(1, 0, 0.0)
    await pool.execute(
        """INSERT INTO jobs (kind, payload, state, run_after) VALUES
               ('sleep', '{}', 'queued', now() - interval '120 seconds'),
               ('sleep', '{}', 'queued', now() - interval '30 seconds'),
               ('sleep', '{}', 'running', now() - interval '1 hour'),
               ('sleep', '{}', 'failed', now() - interval '1 day')"""
    )
    queue = await job_queries.queue_state(pool)
    assert (queue.queued, queue.running) == (3, 1)
    assert 120 <= queue.oldest_due_wait_seconds < 125


async def test_metrics_show_the_oldest_due_job_wait(pool: Pool, settings: Settings) -> None:
    await pool.execute(
        "INSERT INTO jobs (kind, payload, run_after) VALUES ('sleep', '{}', now() - interval '1 h')"
    )
    app = create_app(make_settings(settings.database_url, job_workers=0, stats_interval=0.1))
    async with (
        run_lifespan(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as c,
    ):
        text = await until_metric(c, 'jobs_unfinished{state="queued"} 1.0')
    assert 3600 <= sample(text, "jobs_oldest_queued_age_seconds") < 3660


async def test_app_ready_follows_the_readiness_check(database_url: str) -> None:
    draining = Draining()
    app = create_app(make_settings(database_url, stats_interval=0.1), draining=draining)
    async with (
        run_lifespan(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as c,
    ):
        await until_metric(c, "app_ready 1.0")
        draining.start()  # what SIGTERM does (service/server.py)
        await until_metric(c, "app_ready 0.0")
        assert (await c.get("/readyz")).status_code == 503


async def test_job_outcomes_are_counted_from_zero(client: httpx.AsyncClient) -> None:
    text = await metrics_text(client)
    for outcome in ("done", "retry", "failed", "released", "lease_lost"):
        assert f'jobs_finished_total{{kind="sleep",outcome="{outcome}"}} 0.0' in text
