"""Tracing, opt-in: what the app traces, or nothing at all.

Tracing is on when the standard OpenTelemetry variables name an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and
`OTEL_SDK_DISABLED` is not `true`; the SDK itself reads the rest (`OTEL_SERVICE_NAME`,
`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_PROTOCOL`...). With
tracing off, `NoTracing` stands in: no OpenTelemetry module is imported, nothing is wrapped,
no exporter runs (tests/unit/test_tracing.py checks the imports). With it on, service/otel.py
does the work.
"""

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Protocol

from starlette.types import ASGIApp

from service.models import ClaimedJob
from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Tracing(Protocol):
    """The app's tracing, whichever it is. Spans of the request path: the route (`wrap`),
    the pool acquire (`acquire_span`) and every SQL statement (`start`'s instrumentation);
    of the worker: one per job attempt, linked to the request that enqueued it."""

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The ASGI app inside a server span per request (its parent: a `traceparent`)."""

    def start(self) -> None:
        """Lifespan start-up: SQL statements traced, log lines carry the span's ids."""

    async def stop(self) -> None:
        """Lifespan shutdown: undoes `start` and exports what is left."""

    def acquire_span(self) -> AbstractContextManager[object]:
        """Around waiting for a turn and a pool connection."""

    def job_span(self, job: ClaimedJob) -> AbstractContextManager[object]:
        """Around one attempt at a job, linked to the span that enqueued it."""

    def traceparent(self) -> str | None:
        """The current span as a W3C traceparent, stored with a job it enqueues."""


class NoTracing:
    """Tracing off: every method does nothing, at the cost of a call."""

    def wrap(self, app: ASGIApp) -> ASGIApp:
        return app

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def acquire_span(self) -> AbstractContextManager[object]:
        return nullcontext()

    def job_span(self, job: ClaimedJob) -> AbstractContextManager[object]:
        return nullcontext()

    def traceparent(self) -> str | None:
        return None


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def from_environment(settings: Settings, provider: "TracerProvider | None" = None) -> Tracing:
    """Tracing as the environment asks; a `provider` given (tests) turns it on regardless."""
    if provider is None and not tracing_requested():
        return NoTracing()
    from service.otel import OpenTelemetryTracing, provider_from_environment

    return OpenTelemetryTracing(provider or provider_from_environment(), settings)
