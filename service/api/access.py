"""Who may call what: the scope each route needs, said once here, and the `authorize`
dependency that checks a request's API key against it.

To use OIDC/JWT instead of API keys, replace `authorize`: verify the bearer token (signature,
issuer, audience, expiry) and map its `scope` claim onto the same scopes; the table, the
errors and the routers stay as they are (README, "API keys and scopes").
"""

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import RuntimeDep
from service.api.ratelimit import RATE_LIMITED, enforce
from service.domain.errors import MissingScope, Unauthenticated
from service.domain.keys import Caller
from service.domain.ratelimit import Kind
from service.middleware import API_KEY_NAME
from service.models import Problem, Scope

# (method, route path) -> the scope it needs. Every route not listed here is open (/healthz,
# /readyz, /whoami); check_route_scopes makes sure no route of a guarded router is missing.
ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("GET", "/items"): Scope.ITEMS_READ,
    ("GET", "/items/{item_id}"): Scope.ITEMS_READ,
    ("POST", "/items"): Scope.ITEMS_WRITE,
    ("PATCH", "/items/{item_id}"): Scope.ITEMS_WRITE,
    ("DELETE", "/items/{item_id}"): Scope.ITEMS_WRITE,
    ("GET", "/jobs/{job_id}"): Scope.JOBS_READ,
    ("POST", "/jobs"): Scope.JOBS_WRITE,
}
READ_SCOPES = frozenset({Scope.ITEMS_READ, Scope.JOBS_READ})
SECURITY_SCHEME = "apiKey"

bearer = HTTPBearer(
    scheme_name=SECURITY_SCHEME,
    description="An API key made with `python -m service.keys create` (README).",
    auto_error=False,
)

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "No API key, or one that is unknown, revoked or expired.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"model": Problem, "description": "The API key lacks the scope this route needs."},
    **RATE_LIMITED,
}


def route_scope(request: Request) -> Scope:
    route: APIRoute = request.scope["route"]
    return ROUTE_SCOPES[(request.method, route.path)]


async def authorize(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller | None:
    """The caller, whose key has the route's scope; None for an anonymous read where reads are
    public (APP_PUBLIC_READS). A key sent to a public read is still checked. Either is then
    rate limited: a key by its name, an anonymous read by the address Caddy saw."""
    needed = route_scope(request)
    kind: Kind = "read" if request.method in ("GET", "HEAD") else "write"
    if credentials is None:
        if runtime.settings.public_reads and needed in READ_SCOPES:
            address = request.client.host if request.client else "unknown"
            enforce(request, f"address:{address}", kind)
            return None
        raise Unauthenticated("this route needs an API key: Authorization: Bearer <key>")
    caller = await runtime.authenticator.authenticate(credentials.credentials)
    request.scope[API_KEY_NAME] = caller.name  # for the access line and the metrics
    enforce(request, f"key:{caller.name}", kind)  # a 403 too: a key floods nothing
    if needed not in caller.scopes:
        raise MissingScope(needed)
    return caller


CallerDep = Annotated[Caller | None, Depends(authorize)]
AUTHORIZED = [Depends(authorize)]


def check_route_scopes(routers: Iterable[APIRouter]) -> None:
    """Every route of a router guarded by `authorize` has its scope in ROUTE_SCOPES (a route
    added without one would answer 500 on every request): checked at import."""
    for router in routers:
        if not any(d.dependency is authorize for d in router.dependencies):
            continue
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods or ():
                if (method, route.path) not in ROUTE_SCOPES:
                    raise LookupError(f"{method} {route.path} has no scope in ROUTE_SCOPES")
