"""Idempotency keys (draft-ietf-httpapi-idempotency-key-header): a request repeated with the same
key gets the first one's response again instead of running twice.

A keyed request runs in one transaction that first takes the key's advisory lock (a duplicate
in flight is refused at once), then replays a stored response or runs the effect and stores its
response. The effect and its stored response commit or roll back together, and only a
successful response is stored, so a failed attempt can be retried.
"""

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from service.db import idempotency as queries
from service.db.pool import Connection, Pool
from service.domain.errors import Conflict, InvalidInput
from service.models import FieldError, StoredResponse

log = logging.getLogger(__name__)

PURGE_BATCH = 1000
REUSED = FieldError(
    loc=["header", "Idempotency-Key"],
    msg="already used for another request (method, path or body)",
    type="idempotency_key_reused",
)


@dataclass(frozen=True)
class KeyedRequest:
    key: str
    fingerprint: str


def fingerprint(caller: str, method: str, path: str, body: Any) -> str:
    """SHA-256 of the request as the canonical JSON [caller, method, path, body]: whitespace
    and key order in the client's body do not change it. With the caller (the API key's name)
    in it, one client's key never replays another client's response."""
    canonical = json.dumps(
        [caller, method, path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyService:
    def __init__(self, connection: Connection, ttl: float, outcomes: Counter) -> None:
        self._connection = connection
        self._ttl = ttl
        self._outcomes = outcomes

    async def run(
        self, request: KeyedRequest | None, respond: Callable[[], Awaitable[StoredResponse]]
    ) -> tuple[StoredResponse, bool]:
        """The response to send, and whether it is a replay. `respond` runs the effect on this
        service's connection; without a key it runs as it would without this service."""
        if request is None:
            return await respond(), False
        async with self._connection.transaction():
            if not await queries.try_lock(self._connection, request.key):
                self._outcomes.labels("in_flight").inc()
                raise Conflict("a request with this Idempotency-Key is still in progress")
            stored = await queries.get(self._connection, request.key)
            if stored is not None:
                if stored.fingerprint != request.fingerprint:
                    self._outcomes.labels("mismatch").inc()
                    raise InvalidInput([REUSED])
                self._outcomes.labels("replayed").inc()
                return stored, True
            response = await respond()
            await queries.store(
                self._connection, request.key, request.fingerprint, response, self._ttl
            )
        self._outcomes.labels("stored").inc()
        return response, False


async def purge_expired(pool: Pool, batch: int = PURGE_BATCH) -> int:
    """Deletes every expired record, `batch` rows per statement: each is a short transaction,
    so a large backlog never holds many row locks or one long transaction."""
    purged = 0
    while True:
        deleted = await queries.delete_expired(pool, batch)
        purged += deleted
        if deleted < batch:
            break
    if purged:
        log.info("expired idempotency keys purged", extra={"count": purged})
    return purged
