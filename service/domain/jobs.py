"""Jobs: enqueue with a validated payload, read, and long-poll until finished.

This service holds the requests' turns at the pool, not one connection: a long-poll must not
pin a connection for its whole wait, so each read borrows one briefly, in turn. An enqueue runs
on the request's connection, in the transaction of an Idempotency-Key if there is one (the
queue's NOTIFY is sent at its commit).
"""

import asyncio
from collections.abc import Mapping
from contextlib import suppress
from uuid import UUID

from pydantic import ValidationError

from service.background.events import JobEvents
from service.background.handlers import JobHandler
from service.db import jobs as queries
from service.db.pool import Connection, Turns
from service.domain.errors import InvalidInput, NotFound
from service.models import FieldError, Job, JobCreate
from service.tracing import Tracing

FINISHED = frozenset({"done", "failed"})
# Long-polls re-read the job at least this often, in case a notification was missed.
RECHECK_SECONDS = 1.0


class JobService:
    def __init__(
        self,
        turns: Turns,
        acquire_timeout: float,
        events: JobEvents,
        handlers: Mapping[str, JobHandler],
        tracing: Tracing,
    ) -> None:
        self._tracing = tracing
        self._turns = turns
        self._acquire_timeout = acquire_timeout
        self._events = events
        self._handlers = handlers

    async def enqueue(self, request: JobCreate, connection: Connection) -> Job:
        handler = self._handlers.get(request.kind)
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            raise InvalidInput(
                [
                    FieldError(
                        loc=["body", "kind"], msg=f"unknown kind; one of: {known}", type="enum"
                    )
                ]
            )
        try:
            payload = handler.payload_model.model_validate(request.payload)
        except ValidationError as error:
            raise InvalidInput(
                [
                    FieldError(loc=["body", "payload", *e["loc"]], msg=e["msg"], type=e["type"])
                    for e in error.errors()
                ]
            ) from None
        return await queries.insert(
            connection,
            request.kind,
            payload.model_dump(mode="json"),
            request.max_attempts,
            self._tracing.traceparent(),
        )

    async def get(self, job_id: UUID) -> Job:
        async with self._turns.acquire(self._acquire_timeout) as connection:
            job = await queries.get(connection, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        return job

    async def wait(self, job_id: UUID, seconds: float) -> Job:
        """The job once finished, or as it is when `seconds` have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        with self._events.watch(job_id) as changed:
            while True:
                changed.clear()
                job = await self.get(job_id)
                remaining = deadline - loop.time()
                if job.state in FINISHED or remaining <= 0:
                    return job
                with suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, RECHECK_SECONDS)):
                        await changed.wait()
