"""Job state changes, pushed by Postgres (LISTEN jobs) to the workers and long-polls here.

Notifications only shorten waits: every waiter also re-checks the database on a timer, so a
lost notification (the listener reconnecting) costs latency, never a job.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from uuid import UUID

from service.db.pool import dedicated_connection
from service.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "jobs"
LISTENER_HEARTBEAT_SECONDS = 5.0


class JobEvents:
    def __init__(self) -> None:
        self._work_available = asyncio.Event()
        self._watchers: defaultdict[UUID, set[asyncio.Event]] = defaultdict(set)

    def publish(self, job_id: UUID, state: str) -> None:
        if state == "queued":
            self._work_available.set()
        for event in self._watchers.get(job_id, ()):
            event.set()

    async def wait_for_work(self, within: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation that
        # arrives as the event is set (cpython#86296), and shutdown would wait on this worker.
        with suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._work_available.wait()
        self._work_available.clear()

    @contextmanager
    def watch(self, job_id: UUID) -> Iterator[asyncio.Event]:
        """An event set whenever the job's state changes, for as long as the block runs."""
        event = asyncio.Event()
        self._watchers[job_id].add(event)
        try:
            yield event
        finally:
            watchers = self._watchers[job_id]
            watchers.discard(event)
            if not watchers:
                del self._watchers[job_id]

    def _on_notification(
        self, _connection: object, _pid: int, _channel: str, payload: object
    ) -> None:
        job_id, _, state = str(payload).partition(" ")
        try:
            self.publish(UUID(job_id), state)
        except ValueError:
            log.warning("malformed job notification", extra={"payload": payload})

    async def listen(self, settings: Settings) -> None:
        """Runs until cancelled; raises when the connection breaks (the supervisor restarts it)."""
        async with dedicated_connection(settings) as connection:
            await connection.add_listener(CHANNEL, self._on_notification)
            # Anything that changed while we were not listening: let the pollers look now.
            self._work_available.set()
            while True:
                await asyncio.sleep(LISTENER_HEARTBEAT_SECONDS)
                await connection.execute("SELECT 1")
