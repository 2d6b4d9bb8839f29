"""Keeps a background task alive: a crash is logged and the task restarted with backoff.

Without this, a crashed worker would leave the app serving while its work silently stops
(Hypercorn reports a failed lifespan task only at shutdown).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5
HEALTHY_AFTER_SECONDS = 60.0  # a run this long resets the backoff


async def supervise(name: str, run: Callable[[], Awaitable[None]], max_backoff: float) -> None:
    loop = asyncio.get_running_loop()
    backoff = min(FIRST_BACKOFF_SECONDS, max_backoff)
    while True:
        started = loop.time()
        try:
            await run()
            log.error("background task returned unexpectedly", extra={"task": name})
        except Exception:
            if loop.time() - started > HEALTHY_AFTER_SECONDS:
                backoff = min(FIRST_BACKOFF_SECONDS, max_backoff)
            log.exception("background task crashed", extra={"task": name, "restart_in": backoff})
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)
