"""The worker against a real queue: cancellation, lease expiry, lost leases, retries."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import pytest

from service.background.events import JobEvents
from service.background.handlers import DEFAULT_HANDLERS
from service.background.worker import Worker
from service.db import jobs as queries
from service.db.pool import Pool
from service.metrics import Metrics
from service.models import ClaimedJob
from service.settings import Settings
from service.tracing import NoTracing


def make_worker(pool: Pool, settings: Settings, name: str = "test-worker") -> Worker:
    return Worker(name, pool, JobEvents(), DEFAULT_HANDLERS, settings, Metrics(), NoTracing())


async def job_row(pool: Pool, job_id: UUID) -> dict[str, object]:
    row = await pool.fetchrow(
        "SELECT state, attempts, lease_owner, result FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    return dict(row)


async def wait_for_state(pool: Pool, job_id: UUID, state: str, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while (await job_row(pool, job_id))["state"] != state:
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """The worker's loop in a task for the block; cancelled after, as shutdown does."""
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def cancel_once(worker: Worker, reached: asyncio.Event) -> None:
    """Runs the worker until it reaches the event, then cancels it, as shutdown does."""
    task = asyncio.create_task(worker.run())
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_worker_puts_its_job_back_and_reraises(
    pool: Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    job = await queries.insert(pool, "sleep", {"seconds": 60}, 3)
    worker = make_worker(pool, settings.model_copy(update={"job_workers": 0}))
    task = asyncio.create_task(worker.run())
    await wait_for_state(pool, job.id, "running")

    caplog.set_level(logging.INFO, logger="service.background.worker")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    row = await job_row(pool, job.id)
    assert row == {"state": "queued", "attempts": 0, "lease_owner": None, "result": None}
    assert any(r.message == "job released on cancellation" for r in caplog.records)


async def test_cancellation_during_a_claim_puts_the_claimed_job_back(
    pool: Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres can commit a claim whose answer the worker is cancelled before reading (a
    replica shutting down is woken by another one's release): the job must go back to the
    queue now, not wait out its lease."""
    job = await queries.insert(pool, "sleep", {"seconds": 60}, 3)
    committed = asyncio.Event()
    real_claim = queries.claim

    async def claim_answering_late(
        pool: Pool, owner: str, lease_seconds: float
    ) -> ClaimedJob | None:
        claimed = await real_claim(pool, owner, lease_seconds)
        committed.set()
        await asyncio.sleep(0.5)  # the answer is still on its way when the cancellation lands
        return claimed

    monkeypatch.setattr(queries, "claim", claim_answering_late)
    await cancel_once(make_worker(pool, settings), committed)

    row = await job_row(pool, job.id)
    assert row == {"state": "queued", "attempts": 0, "lease_owner": None, "result": None}


async def test_cancellation_while_recording_the_outcome_keeps_the_outcome(
    pool: Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await queries.insert(pool, "sleep", {"seconds": 0}, 3)
    recording = asyncio.Event()
    real_complete = queries.complete

    async def slow_complete(pool: Pool, job_id: UUID, owner: str, result: dict[str, Any]) -> bool:
        recording.set()
        await asyncio.sleep(0.3)  # the cancellation lands while the outcome is on its way
        return await real_complete(pool, job_id, owner, result)

    monkeypatch.setattr(queries, "complete", slow_complete)
    await cancel_once(make_worker(pool, settings), recording)

    await wait_for_state(pool, job.id, "done", within=5)
    assert (await job_row(pool, job.id))["attempts"] == 1


async def test_job_of_a_dead_worker_is_claimed_again_when_its_lease_expires(
    pool: Pool, settings: Settings
) -> None:
    job = await queries.insert(pool, "sleep", {"seconds": 0}, 3)
    # A worker that claims the job and dies: nothing renews or releases its lease.
    claimed = await queries.claim(pool, "dead-worker", lease_seconds=0.5)
    assert claimed is not None
    assert claimed.id == job.id
    assert await queries.claim(pool, "other", lease_seconds=30) is None, "leased job was taken"

    async with running(make_worker(pool, settings)):
        await wait_for_state(pool, job.id, "done")
    row = await job_row(pool, job.id)
    assert row["attempts"] == 2
    assert row["result"] == {"slept": 0}


async def test_worker_that_lost_its_lease_writes_nothing(pool: Pool, settings: Settings) -> None:
    job = await queries.insert(pool, "sleep", {"seconds": 0.5}, 3)
    worker = make_worker(pool, settings.model_copy(update={"job_lease_seconds": 0.3}))
    async with running(worker):
        await wait_for_state(pool, job.id, "running")
        # Someone else takes the job over (as if our lease had expired while we were stalled).
        await pool.execute(
            "UPDATE jobs SET lease_owner = 'usurper', lease_expires_at = now() + interval '1 hour'"
            " WHERE id = $1",
            job.id,
        )
        await asyncio.sleep(1.0)
    row = await job_row(pool, job.id)
    assert row["state"] == "running"
    assert row["lease_owner"] == "usurper"


async def test_long_job_keeps_its_lease(pool: Pool, settings: Settings) -> None:
    job = await queries.insert(pool, "sleep", {"seconds": 1.2}, 3)
    worker = make_worker(pool, settings.model_copy(update={"job_lease_seconds": 0.4}))
    async with running(worker):
        await wait_for_state(pool, job.id, "done")
    assert (await job_row(pool, job.id))["attempts"] == 1, "the lease expired mid-job"


async def test_failed_attempt_is_retried_later(pool: Pool, settings: Settings) -> None:
    job = await queries.insert(pool, "sleep", {"seconds": 0, "fail": True}, 3)
    worker = make_worker(pool, settings)
    claimed = await queries.claim(pool, worker.name, 5)
    assert claimed is not None
    await worker.process(claimed)
    row = await pool.fetchrow(
        "SELECT state, attempts, run_after > now() AS backing_off FROM jobs WHERE id = $1", job.id
    )
    assert row is not None
    assert dict(row) == {"state": "queued", "attempts": 1, "backing_off": True}
