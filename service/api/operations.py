"""Operations endpoints: liveness, readiness, what the app sees of a request, metrics."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import RuntimeDep
from service.api.errors import UNAVAILABLE, ServiceUnavailable
from service.domain.readiness import unready_reason
from service.models import Health, Readiness, WhoAmI

router = APIRouter(tags=["operations"])

FORWARDING_HEADERS = (
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "via",
    "x-request-id",
    "x-client-protocol",
)


@router.get("/healthz", response_model=Health, status_code=200)
async def healthz(runtime: RuntimeDep) -> Health:
    """Liveness: the process answers. No I/O, so a database outage never restarts the app."""
    return Health(version=runtime.settings.version)


@router.get(
    "/readyz",
    response_model=Readiness,
    status_code=200,
    responses=UNAVAILABLE,
)
async def readyz(runtime: RuntimeDep) -> Readiness:
    """Readiness: the database answers within ready_timeout, and the app is not draining."""
    reason = await unready_reason(runtime.draining, runtime.pool, runtime.settings.ready_timeout)
    if reason is not None:
        raise ServiceUnavailable(reason)
    return Readiness()


# Uptime monitors often ask with HEAD: the probes answer it as GET, and the server sends no
# body. Not in the OpenAPI document, where a second operation would repeat GET's.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


@router.get("/whoami", response_model=WhoAmI, status_code=200)
async def whoami(request: Request) -> WhoAmI:
    """The request as the app sees it after the proxy chain: for operators and the tests."""
    return WhoAmI(
        client=request.client.host if request.client else None,
        scheme=request.url.scheme,
        host=request.headers.get("host"),
        http_version=request.scope.get("http_version", "1.1"),
        url=str(request.url_for("whoami")),
        forwarding_headers={
            name: request.headers[name] for name in FORWARDING_HEADERS if name in request.headers
        },
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus scrape target. The public site never routes here (see caddy/Caddyfile)."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
