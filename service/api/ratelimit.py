"""Rate limits over HTTP: `enforce` admits a request or raises `RateLimited` (a 429 problem
with Retry-After), and every limited response carries the RateLimit and RateLimit-Policy
headers of draft-ietf-httpapi-ratelimit-headers-10 (structured fields: a policy's name with
`q`/`w`, its current state with `r`/`t`).

The auth dependency calls `enforce` once it knows who is asking; the headers are added by a
pure ASGI middleware from the decision `enforce` leaves in the request's scope, so that the
route's own response, an error's problem and the 429 all get them.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import problem
from service.domain.ratelimit import Decision, Kind
from service.models import Problem
from service.runtime import runtime_of

# The scope key under which RateLimitHeaders gives each request a list, for `enforce` to
# leave its decision in. Not the scope's "state": servers may share that dict between requests
# (asgi-lifespan does), and a decision must never answer another request.
_DECISION = "service.rate_limit"

# The 429 of every limited route, for the OpenAPI document.
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": Problem,
        "description": "Over the rate limit of this key (or address, for anonymous reads).",
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
            "RateLimit": {
                "description": 'The bucket, e.g. `"writes";r=<left>;t=<seconds until full>`.',
                "schema": {"type": "string"},
            },
            "RateLimit-Policy": {
                "description": 'The limit, e.g. `"reads";q=<burst>;w=<seconds to refill>`.',
                "schema": {"type": "string"},
            },
        },
    }
}


class RateLimited(Exception):
    """A request over its limit: answered 429 with Retry-After."""

    def __init__(self, decision: Decision) -> None:
        assert decision.policy is not None
        name, seconds = decision.policy.name, decision.retry_after
        super().__init__(f"over the {name} limit: retry in {seconds} s")
        self.decision = decision


def enforce(request: Request, identity: str, kind: Kind) -> None:
    """Takes one token from `identity`'s bucket for `kind`, or raises RateLimited. Sync and
    without I/O: it runs inside the auth dependency, on the event loop."""
    decision = runtime_of(request).rate_limits.admit(identity, kind)
    request.scope[_DECISION].append(decision)
    if not decision.admitted:
        raise RateLimited(decision)


def headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The draft's two fields for one decision; none when rate limits are off."""
    policy = decision.policy
    if policy is None:
        return []
    name = f'"{policy.name}"'
    return [
        (b"ratelimit-policy", f"{name};q={policy.burst};w={policy.window}".encode()),
        (b"ratelimit", f"{name};r={decision.remaining};t={decision.reset}".encode()),
    ]


class RateLimitHeaders:
    """Adds the RateLimit headers to the response of every request that `enforce` saw."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # This request's own. In the scope itself, not a copy: the layers outside read what
        # the route sets in it (the route, the API key's name; service/middleware.py).
        decided: list[Decision] = []
        scope[_DECISION] = decided

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and decided:
                message["headers"] = [*message.get("headers", []), *headers(decided[-1])]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    """The 429 problem and the headers middleware."""

    async def rate_limited(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RateLimited)
        retry_after = {"Retry-After": str(error.decision.retry_after)}
        return problem(request, 429, str(error), headers=retry_after)

    app.add_exception_handler(RateLimited, rate_limited)
    app.add_middleware(RateLimitHeaders)
