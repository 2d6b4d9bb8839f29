"""Job events: a worker waiting for work must stay cancellable, whatever arrives meanwhile."""

import asyncio
import uuid

import pytest

from service.background.events import JobEvents


async def test_cancellation_wins_over_work_arriving_at_the_same_moment() -> None:
    # On Python 3.11 asyncio.wait_for returned normally here, swallowing the cancellation
    # (cpython#86296): a worker kept running after shutdown and the lifespan hung on it.
    events = JobEvents()
    waiting = asyncio.create_task(events.wait_for_work(within=10))
    await asyncio.sleep(0)  # the worker is now waiting
    events.publish(uuid.uuid4(), "queued")  # work arrives...
    waiting.cancel()  # ...in the same loop iteration as the shutdown's cancel
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_waiting_ends_at_once_when_work_arrives() -> None:
    events = JobEvents()
    waiting = asyncio.create_task(events.wait_for_work(within=10))
    await asyncio.sleep(0)
    events.publish(uuid.uuid4(), "queued")
    await asyncio.wait_for(waiting, 1)
