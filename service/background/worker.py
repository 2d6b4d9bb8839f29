"""A worker: claims a job, runs its handler while renewing the lease, records the outcome.

Cancellation (shutdown) puts the job back to ``queued`` in a shielded cleanup, then lets
CancelledError propagate. A worker whose process dies leaves a lease that expires; another
worker then claims the job again. Either way no job is lost or left ``running`` for good.
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from service.background.events import JobEvents
from service.background.handlers import JobHandler
from service.db import jobs as queries
from service.db.errors import DATABASE_UNAVAILABLE
from service.db.pool import Pool
from service.metrics import Metrics
from service.models import ClaimedJob
from service.settings import Settings
from service.tracing import Tracing

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired): stop without writing."""


class Worker:
    def __init__(
        self,
        name: str,
        pool: Pool,
        events: JobEvents,
        handlers: Mapping[str, JobHandler],
        settings: Settings,
        metrics: Metrics,
        tracing: Tracing,
    ) -> None:
        self._tracing = tracing
        self.name = name
        self._pool = pool
        self._events = events
        self._handlers = handlers
        self._settings = settings
        self._metrics = metrics

    async def run(self) -> None:
        while True:
            job = await self._claim()
            if job is None:
                await self._events.wait_for_work(self._settings.job_poll_interval)
                continue
            with self._tracing.job_span(job):
                await self.process(job)

    async def process(self, job: ClaimedJob) -> None:
        context = {"job_id": str(job.id), "kind": job.kind, "attempt": job.attempts}
        log.info("job started", extra=context)
        try:
            result = await self._execute(job)
        except asyncio.CancelledError:
            await self._put_back(job)
            raise
        except LeaseLost:
            log.warning("job lease lost; another worker owns it", extra=context)
            self._metrics.jobs_finished.labels(job.kind, "lease_lost").inc()
        except Exception as error:
            # Outcomes are shielded: a shutdown must not discard a finished attempt.
            state = await asyncio.shield(
                queries.fail(self._pool, job.id, self.name, _describe(error))
            )
            log.warning("job failed", exc_info=True, extra={**context, "state": state})
            self._metrics.jobs_finished.labels(
                job.kind, "failed" if state == "failed" else "retry"
            ).inc()
        else:
            await asyncio.shield(queries.complete(self._pool, job.id, self.name, result))
            log.info("job done", extra=context)
            self._metrics.jobs_finished.labels(job.kind, "done").inc()

    async def _claim(self) -> ClaimedJob | None:
        """The next job, if any. A cancellation that lands while the claim is in flight waits
        for its answer: Postgres may have committed it, and a job claimed by a worker that is
        gone would otherwise sit ``running`` until its lease expires."""
        claiming = asyncio.ensure_future(
            queries.claim(self._pool, self.name, self._settings.job_lease_seconds)
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            try:
                job = await asyncio.shield(claiming)
            except Exception:
                job = None  # a claim that failed took nothing
            if job is not None:
                await self._put_back(job)
            raise

    async def _put_back(self, job: ClaimedJob) -> None:
        """Cancellation cleanup: the job returns to the queue; shielded, as it must finish."""
        released = await asyncio.shield(self._release(job))
        log.info(
            "job released on cancellation",
            extra={"job_id": str(job.id), "kind": job.kind, "released": released},
        )
        self._metrics.jobs_finished.labels(job.kind, "released").inc()

    async def _execute(self, job: ClaimedJob) -> dict[str, Any]:
        handler = self._handlers.get(job.kind)
        if handler is None:
            raise LookupError(f"no handler for job kind {job.kind!r}")
        if job.attempts > job.max_attempts:
            raise RuntimeError(f"gave up: the job's lease expired on {job.max_attempts} attempts")
        payload = handler.payload_model.model_validate(job.payload)
        try:
            async with asyncio.TaskGroup() as group:
                keeper = group.create_task(self._keep_lease(job))
                try:
                    return await handler.run(payload)
                finally:
                    keeper.cancel()
        except BaseExceptionGroup as group_error:
            # One task failed (the handler or the lease keeper) and the other was cancelled.
            raise group_error.exceptions[0] from None

    async def _keep_lease(self, job: ClaimedJob) -> None:
        lease = self._settings.job_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await queries.renew_lease(self._pool, job.id, self.name, lease):
                    raise LeaseLost
            except DATABASE_UNAVAILABLE:
                log.warning("lease renewal failed; retrying", extra={"job_id": str(job.id)})

    async def _release(self, job: ClaimedJob) -> bool:
        try:
            async with asyncio.timeout(self._settings.job_release_timeout):
                return await queries.release(self._pool, job.id, self.name)
        except DATABASE_UNAVAILABLE:
            # The lease will expire and another worker will claim the job again.
            log.warning(
                "could not release job; its lease will expire", extra={"job_id": str(job.id)}
            )
            return False


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return f"invalid payload: {error.error_count()} error(s)"
    return f"{type(error).__name__}: {error}"
