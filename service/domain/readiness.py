"""Readiness: whether this replica should get traffic. GET /readyz answers it to whoever asks;
a lifespan task publishes the same answer as the `app_ready` gauge, for the alerts."""

from service.db.errors import DATABASE_UNAVAILABLE
from service.db.pool import Pool, ping
from service.draining import Draining


async def unready_reason(draining: Draining, pool: Pool, within: float) -> str | None:
    """Why this replica is not ready (draining, or Postgres not answering within `within`
    seconds), or None when it is."""
    if draining.started:
        return "shutting down"
    try:
        await ping(pool, within)
    except DATABASE_UNAVAILABLE:
        return "database unreachable"
    return None
