"""The log handler: lines logged on the event loop share one write per loop iteration."""

import asyncio
import io
import logging
import threading
from collections.abc import Iterator

import pytest

from service.logs import LoopBatchedStreamHandler


class Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Writes]]:
    stream = Writes()
    handler = LoopBatchedStreamHandler(stream)
    logger = logging.getLogger("test.batched")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


async def test_lines_of_one_loop_iteration_are_written_together_at_its_end(
    logged: tuple[logging.Logger, Writes],
) -> None:
    logger, stream = logged
    for n in range(3):
        logger.info("line %d", n)
    assert stream.writes == [], "written before the iteration ended"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == ["line 0\nline 1\nline 2\n"]
    logger.info("alone")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes[1:] == ["alone\n"]


async def test_a_line_from_another_thread_is_written_at_once_after_the_held_ones(
    logged: tuple[logging.Logger, Writes],
) -> None:
    logger, stream = logged
    logger.info("held")
    thread = threading.Thread(target=logger.info, args=("from a thread",))
    thread.start()
    thread.join()
    assert stream.getvalue() == "held\nfrom a thread\n"


def test_without_a_running_loop_each_line_is_written_at_once(
    logged: tuple[logging.Logger, Writes],
) -> None:
    logger, stream = logged
    logger.info("starting")
    assert stream.writes == ["starting\n"]


def test_a_line_held_when_its_loop_ends_is_written_by_the_next_loop(
    logged: tuple[logging.Logger, Writes],
) -> None:
    """A loop that stops before its flush runs (each test's loop, a restarted one) must not
    leave the next loop's lines held until the process exits."""
    logger, stream = logged
    loop = asyncio.new_event_loop()

    def log_and_stop() -> None:
        logger.info("last of the first loop")
        loop.stop()  # after this iteration: the flush it scheduled never runs

    loop.call_soon(log_and_stop)
    loop.run_forever()
    loop.close()

    async def log() -> None:
        logger.info("first of the next loop")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(log())
    assert stream.getvalue() == "last of the first loop\nfirst of the next loop\n"
