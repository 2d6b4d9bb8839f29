"""The lifespan owns everything that lives as long as the process: the pool and the workers.

Start-up: pool (retried while Postgres starts), migrations (under an advisory lock), then the
background tasks in a TaskGroup. Shutdown, in order: readiness turns 503, the tasks are
cancelled explicitly (a TaskGroup waits for its children, it does not cancel them; cancelled
workers put their jobs back), then the pool is closed within a bound.
"""

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress

from fastapi import FastAPI

from service.background.events import JobEvents
from service.background.supervisor import supervise
from service.background.worker import Worker
from service.db import backups as backup_queries
from service.db import jobs as job_queries
from service.db.errors import DATABASE_UNAVAILABLE
from service.db.migrate import apply_migrations
from service.db.password import Password
from service.db.pool import Reachability, Turns, open_pool
from service.domain.idempotency import purge_expired
from service.domain.keys import Authenticator
from service.domain.ratelimit import Kind, Policy, RateLimits
from service.domain.readiness import unready_reason
from service.runtime import Process, Runtime, lifespan_state
from service.settings import Settings

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Runtime]]]


def lifespan(process: Process) -> Lifespan:
    """The app's lifespan on `process`: it yields the Runtime as Starlette lifespan state."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, Runtime]]:
        process.tracing.start()
        try:
            async with _serving(process) as runtime:
                yield lifespan_state(runtime)
        finally:
            await process.tracing.stop()

    return run


@asynccontextmanager
async def _serving(process: Process) -> AsyncIterator[Runtime]:
    settings, metrics = process.settings, process.metrics
    reachability = Reachability(Password(settings).connect)
    async with open_pool(settings, reachability) as pool:
        await apply_migrations(settings)
        turns = Turns(
            pool,
            settings.db_pool_max_size,
            reachability,
            settings.db_connect_timeout,
            process.tracing.acquire_span,
        )
        runtime = Runtime(
            settings=settings,
            handlers=process.handlers,
            metrics=metrics,
            draining=process.draining,
            tracing=process.tracing,
            pool=pool,
            turns=turns,
            events=JobEvents(),
            authenticator=Authenticator(
                turns, settings.db_acquire_timeout, settings.api_key_cache_seconds
            ),
            rate_limits=_rate_limits(settings),
        )
        metrics.watch_pool(pool)
        metrics.count_job_kinds(runtime.handlers)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(supervise(name, run, settings.supervisor_max_backoff), name=name)
                for name, run in _background(runtime).items()
            ]
            log.info("started", extra={"version": settings.version, "tasks": len(tasks)})
            try:
                yield runtime
            finally:
                runtime.draining.start()
                log.info("shutdown: cancelling background tasks", extra={"tasks": len(tasks)})
                for task in tasks:
                    task.cancel()
        log.info("shutdown: background tasks stopped")
        metrics.unwatch_pool()
    log.info("shutdown complete")


def _rate_limits(settings: Settings) -> RateLimits:
    reads = Policy("reads", settings.rate_limit_reads_per_second, settings.rate_limit_read_burst)
    writes = Policy(
        "writes", settings.rate_limit_writes_per_second, settings.rate_limit_write_burst
    )
    policies: dict[Kind, Policy] = {"read": reads, "write": writes}
    enabled = policies if settings.rate_limits else None
    return RateLimits(enabled, settings.rate_limit_max_identities)


def _background(runtime: Runtime) -> dict[str, Callable[[], Awaitable[None]]]:
    settings = runtime.settings
    tasks: dict[str, Callable[[], Awaitable[None]]] = {
        "job-events": lambda: runtime.events.listen(settings),
        "job-stats": lambda: _periodically(
            settings.stats_interval, lambda: _refresh_queue_gauge(runtime)
        ),
        "readiness": lambda: _periodically(
            settings.stats_interval, lambda: _refresh_readiness_gauge(runtime)
        ),
        "backup-stats": lambda: _periodically(
            settings.stats_interval, lambda: _refresh_backup_gauges(runtime)
        ),
        "idempotency-purge": lambda: _periodically(
            settings.idempotency_purge_interval, lambda: purge_expired(runtime.pool)
        ),
    }
    # Lease owners must be unique across replicas and restarts.
    process_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    for number in range(settings.job_workers):
        worker = Worker(
            f"{process_id}-worker-{number}",
            runtime.pool,
            runtime.events,
            runtime.handlers,
            settings,
            runtime.metrics,
            runtime.tracing,
        )
        tasks[worker.name] = worker.run
    return tasks


async def _periodically(seconds: float, action: Callable[[], Awaitable[object]]) -> None:
    """Runs `action` every `seconds`; an unreachable database skips a round, not the task."""
    while True:
        with suppress(*DATABASE_UNAVAILABLE):
            await action()
        await asyncio.sleep(seconds)


async def _refresh_queue_gauge(runtime: Runtime) -> None:
    queue = await job_queries.queue_state(runtime.pool)
    runtime.metrics.jobs_unfinished.labels("queued").set(queue.queued)
    runtime.metrics.jobs_unfinished.labels("running").set(queue.running)
    runtime.metrics.jobs_oldest_queued_age.set(queue.oldest_due_wait_seconds)


async def _refresh_readiness_gauge(runtime: Runtime) -> None:
    reason = await unready_reason(runtime.draining, runtime.pool, runtime.settings.ready_timeout)
    runtime.metrics.ready.set(0 if reason else 1)


async def _refresh_backup_gauges(runtime: Runtime) -> None:
    metrics = runtime.metrics
    archive = await backup_queries.archive_state(runtime.pool)
    metrics.wal_archived.set(archive.archived)
    metrics.wal_archive_failed.set(archive.failed)
    metrics.wal_last_archived.set(archive.last_archived_at or 0)
    metrics.wal_last_failed.set(archive.last_failed_at or 0)
    for kind, finished in (await backup_queries.newest_backups(runtime.pool)).items():
        metrics.backup_last_success.labels(kind).set(finished)
