"""Rate limits: a token bucket per identity and kind of request, in this process's memory.

A bucket holds up to `burst` tokens and gains `rate` tokens a second; a request takes one, or
is refused when less than one is left. Nothing here does I/O: `RateLimits.admit` is a few
arithmetic operations and dictionary moves (README "Rate limits" has its cost, and why the
limit is per replica rather than shared in Postgres).

Memory is bounded twice. An identity idle long enough for every one of its buckets to be full
again is forgotten (a full bucket is exactly a new one, so forgetting it changes nothing).
And at most `max_identities` are kept: a new identity beyond that evicts the one seen least
recently, which gets a full bucket when it comes back (at most one extra burst for it; the
cap is there so that a flood of new identities costs memory within a bound, not to limit).
"""

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["read", "write"]


@dataclass(frozen=True)
class Policy:
    """`burst` requests at once, and `rate` a second after that."""

    name: str  # the policy's name in the RateLimit headers
    rate: float
    burst: int

    @property
    def window(self) -> int:
        """Seconds an empty bucket takes to fill: the draft's `w`, for `q` = burst."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass(frozen=True)
class Decision:
    """One request's answer, and what the RateLimit headers say about its bucket."""

    admitted: bool
    policy: Policy | None = None  # None: rate limits are off, no headers
    remaining: int = 0  # whole tokens left after this request
    reset: int = 0  # seconds until the bucket is full again
    retry_after: int = 0  # refused: seconds until a token is there (>= 1)


UNLIMITED = Decision(admitted=True)


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class _Identity:
    __slots__ = ("buckets", "seen")

    def __init__(self, seen: float) -> None:
        self.buckets: dict[Kind, _Bucket] = {}
        self.seen = seen


class RateLimits:
    """The buckets of every identity this process has seen lately. Not thread-safe: it lives
    on the event loop, and `admit` never awaits."""

    def __init__(
        self,
        policies: Mapping[Kind, Policy] | None,
        max_identities: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`policies` None: off, every request admitted and no headers."""
        self.policies = dict(policies) if policies is not None else None
        self.max_identities = max_identities
        self._clock = clock
        # The least recently seen first.
        self._identities: OrderedDict[str, _Identity] = OrderedDict()
        # Idle this long, every bucket of an identity is full again.
        self._forget_after = max(
            (policy.burst / policy.rate for policy in (self.policies or {}).values()), default=0
        )

    def __len__(self) -> int:
        """How many identities are remembered."""
        return len(self._identities)

    def admit(self, identity: str, kind: Kind) -> Decision:
        if self.policies is None:
            return UNLIMITED
        policy = self.policies[kind]
        now = self._clock()
        self._forget_idle(now)
        bucket = self._bucket(identity, kind, policy, now)
        bucket.tokens = min(policy.burst, bucket.tokens + (now - bucket.updated) * policy.rate)
        bucket.updated = now
        admitted = bucket.tokens >= 1
        if admitted:
            bucket.tokens -= 1
        return Decision(
            admitted,
            policy,
            remaining=math.floor(bucket.tokens),
            reset=math.ceil((policy.burst - bucket.tokens) / policy.rate),
            retry_after=0 if admitted else max(1, math.ceil((1 - bucket.tokens) / policy.rate)),
        )

    def _bucket(self, identity: str, kind: Kind, policy: Policy, now: float) -> _Bucket:
        known = self._identities.get(identity)
        if known is None:
            if len(self._identities) >= self.max_identities:
                self._identities.popitem(last=False)
            known = self._identities[identity] = _Identity(now)
        else:
            self._identities.move_to_end(identity)
            known.seen = now
        bucket = known.buckets.get(kind)
        if bucket is None:
            bucket = known.buckets[kind] = _Bucket(policy.burst, now)
        return bucket

    def _forget_idle(self, now: float) -> None:
        """Drops the identities idle for longer than a refill, oldest first (amortised O(1):
        an identity is dropped at most once per time it was added)."""
        while self._identities:
            oldest = next(iter(self._identities.values()))
            if now - oldest.seen < self._forget_after:
                return
            self._identities.popitem(last=False)
