"""API keys: made, listed and revoked by `python -m service.keys`; checked on every request
that needs one (api/access.py).

A key is `svc_<public id>_<secret>`: the public id (64 random bits, hex) finds the row, the
secret is 256 random bits (base64url). Postgres holds the SHA-256 digest of the whole key,
never the key; the digest is compared in constant time.
"""

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.db import api_keys as queries
from service.db.pool import Connection, Turns
from service.domain.errors import Conflict, InvalidKey, NotFound
from service.models import ApiKey, Scope, StoredKey

PREFIX = "svc"
_KEY = re.compile(rf"{PREFIX}_(?P<public_id>[0-9a-f]{{16}})_[A-Za-z0-9_-]{{43}}")
# Keys remembered per process (each with its answer, valid or not): bounded whatever clients send.
CACHE_ENTRIES = 10_000


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A new key and its public id."""
    public_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{PREFIX}_{public_id}_{secret}", public_id


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as their key says."""

    name: str
    scopes: frozenset[Scope]


class KeyService:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def create(
        self, name: str, scopes: list[Scope], expires_in: timedelta | None = None
    ) -> tuple[ApiKey, str]:
        """The key's record and the key itself, which is shown once and then only its digest
        exists."""
        key, public_id = new_key()
        expires_at = datetime.now(UTC) + expires_in if expires_in else None
        try:
            record = await queries.insert(
                self._connection, public_id, digest(key), name, scopes, expires_at
            )
        except queries.DuplicateName:
            raise Conflict(f"a key named {name!r} exists; revoke it first") from None
        return record, key

    async def list(self) -> list[ApiKey]:
        return await queries.list_all(self._connection)

    async def revoke(self, name: str) -> ApiKey:
        record = await queries.revoke(self._connection, name)
        if record is None:
            raise NotFound(f"no live key named {name!r}")
        return record


class Authenticator:
    """Checks a key: one indexed lookup by public id, then the digest in constant time.

    Lookups are cached per process for `cache_seconds` (answers for unknown ids too, so that
    garbage keys cost no query either): a revoked key then works for at most that long. Expiry
    is checked on every request, cached or not."""

    def __init__(
        self,
        turns: Turns,
        acquire_timeout: float,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._turns = turns
        self._acquire_timeout = acquire_timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}

    async def authenticate(self, key: str) -> Caller:
        match = _KEY.fullmatch(key)
        if match is None:
            raise InvalidKey("the API key is malformed")
        stored = await self._lookup(match["public_id"])
        if stored is None or not hmac.compare_digest(stored.digest, digest(key)):
            raise InvalidKey("the API key is unknown or revoked")
        if stored.expires_at is not None and stored.expires_at <= datetime.now(UTC):
            raise InvalidKey("the API key has expired")
        return Caller(stored.name, stored.scopes)

    async def _lookup(self, public_id: str) -> StoredKey | None:
        now = self._clock()
        cached = self._cache.get(public_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._turns.acquire(self._acquire_timeout) as connection:
            stored = await queries.find_unrevoked(connection, public_id)
        if self._cache_seconds > 0:
            self._remember(public_id, (now + self._cache_seconds, stored))
        return stored

    def _remember(self, public_id: str, entry: tuple[float, StoredKey | None]) -> None:
        self._cache.pop(public_id, None)
        if len(self._cache) >= CACHE_ENTRIES:
            # Insertion order is expiry order (one TTL for all): drop the oldest.
            del self._cache[next(iter(self._cache))]
        self._cache[public_id] = entry
