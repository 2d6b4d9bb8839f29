"""The app factory. The image runs ``python -m service.server``, which calls `create_app` with
the draining state its shutdown trigger sets; ``hypercorn service.main:app`` serves ``app``.
"""

from collections.abc import Mapping

from fastapi import FastAPI
from starlette.types import ASGIApp

from service.api import router
from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.openapi import install_openapi
from service.api.ratelimit import install as install_rate_limits
from service.background.handlers import DEFAULT_HANDLERS, JobHandler
from service.draining import CloseWhileDraining, Draining
from service.lifespan import lifespan
from service.logs import configure_logging
from service.metrics import Metrics
from service.middleware import RequestBodyGuard, RequestContextMiddleware, TrustedProxy
from service.runtime import Process
from service.settings import Settings
from service.tracing import Tracing, from_environment


def create_api(
    settings: Settings | None = None,
    handlers: Mapping[str, JobHandler] | None = None,
    draining: Draining | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The API without the layers around it (tests add routes of their own to it)."""
    return _api(_process(settings, handlers, draining, tracing))


def create_app(
    settings: Settings | None = None,
    handlers: Mapping[str, JobHandler] | None = None,
    draining: Draining | None = None,
    tracing: Tracing | None = None,
) -> ASGIApp:
    """The whole ASGI app as served: the API inside request context and the proxy fix.

    TrustedProxy must wrap everything so that every layer sees the real client: it trusts
    exactly one hop (Caddy) for X-Forwarded-For/-Proto/-Host. `draining` is shared
    with whoever decides when the app drains (service/server.py); by default the lifespan
    shutdown alone starts it. `tracing` defaults to what the OTEL_* variables ask
    (service/tracing.py); its server span is outermost but for the proxy fix, so that every
    log line of a request, the access line too, carries the span's ids.
    """
    process = _process(settings, handlers, draining, tracing)
    guarded = RequestBodyGuard(_api(process), process.settings.request_body_timeout)
    context = RequestContextMiddleware(guarded, process.metrics, process.settings.access_log)
    # Outermost but for the proxy fix: every response passes through it.
    closing = CloseWhileDraining(context, process.draining)
    return TrustedProxy(process.tracing.wrap(closing))


def _process(
    settings: Settings | None,
    handlers: Mapping[str, JobHandler] | None,
    draining: Draining | None,
    tracing: Tracing | None,
) -> Process:
    """The parts given, and the defaults of the others; logging is configured first."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    return Process(
        settings=settings,
        handlers=handlers if handlers is not None else DEFAULT_HANDLERS,
        metrics=Metrics(),
        draining=draining if draining is not None else Draining(),
        tracing=tracing if tracing is not None else from_environment(settings),
    )


def _api(process: Process) -> FastAPI:
    settings = process.settings
    api = FastAPI(
        title="service",
        version=settings.version,
        lifespan=lifespan(process),
        # Swagger UI from the app's own files (api/docs.py); ReDoc would need a web worker
        # from a blob: URL and inline styles, which the edge's CSP forbids.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(api, settings.retry_after_seconds)
    install_rate_limits(api)
    api.include_router(router)
    install_openapi(api, process.handlers, settings.public_reads)
    install_docs(api)
    return api


# For `hypercorn service.main:app` (compose.dev.yaml's reloading worker): no lame duck there,
# SIGTERM goes straight to Hypercorn's graceful shutdown.
app = create_app()
