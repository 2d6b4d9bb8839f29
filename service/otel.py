"""Tracing on (service/tracing.py decides): OpenTelemetry's SDK, the ASGI and asyncpg
instrumentations, and this app's own spans. Imported only when tracing is on."""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.models import ClaimedJob
from service.settings import Settings

TRACER_NAME = "service"
# At shutdown, spans still queued get this long to reach the collector (seconds).
FLUSH_SECONDS = 5.0
_propagator = TraceContextTextMapPropagator()
# Regular expressions searched in each request's URL (the ASGI instrumentation's format).
UNTRACED_PATHS = "/healthz$,/readyz$,/metrics$"


class NoOrphanQueries(Sampler):
    """The configured sampler (OTEL_TRACES_SAMPLER), except that a client span with no
    parent, a SQL statement of a background task (a worker's claim every poll interval, the
    gauges' queries), is never recorded: each would be a trace of one span."""

    def __init__(self, configured: Sampler) -> None:
        self._configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind == SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanQueries{{{self._configured.get_description()}}}"


def provider_from_environment() -> TracerProvider:
    """The SDK as the OTEL_* variables configure it, exporting OTLP over HTTP/protobuf."""
    provider = TracerProvider(
        sampler=NoOrphanQueries(_get_from_env_or_default()), resource=Resource.create()
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class RouteSpanName:
    """Names the server span after the route template ("GET /items/{item_id}", not the
    concrete path: span names stay few), when the response starts: routing has found the
    route by then, and the ASGI middleware ends the span with the response's last message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_naming_the_span(message: Message) -> None:
            route = getattr(scope.get("route"), "path", None)
            if message["type"] == "http.response.start" and route is not None:
                span = trace.get_current_span()
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            await send(message)

        await self.app(scope, receive, send_naming_the_span)


class SpanIdsOnLogLines(logging.Filter):
    """Adds trace_id and span_id (hex, as every backend shows them) to each record logged
    inside a span; the JSON formatter writes them as fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


class OpenTelemetryTracing:
    def __init__(self, provider: TracerProvider, settings: Settings) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(TRACER_NAME)
        self._asyncpg = AsyncPGInstrumentor(  # type: ignore[no-untyped-call]
            capture_parameters=settings.trace_sql_parameters
        )
        self._log_filter = SpanIdsOnLogLines()

    def wrap(self, app: ASGIApp) -> ASGIApp:
        middleware: ASGIApp = OpenTelemetryMiddleware(
            RouteSpanName(app),
            tracer_provider=self.provider,
            # Probes, not traffic: the healthcheck every few seconds, Prometheus's scrapes.
            excluded_urls=UNTRACED_PATHS,
            # One span per request: no span per ASGI message sent or received.
            exclude_spans=["receive", "send"],
            default_span_details=lambda scope: (scope.get("method", "HTTP"), {}),
        )
        return middleware

    def start(self) -> None:
        self._asyncpg.instrument(tracer_provider=self.provider)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._log_filter)

    async def stop(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._log_filter)
        self._asyncpg.uninstrument()
        # force_flush blocks on the export: off the event loop.
        await asyncio.to_thread(self.provider.force_flush, int(FLUSH_SECONDS * 1000))

    def acquire_span(self) -> AbstractContextManager[object]:
        return self._tracer.start_as_current_span("pool.acquire")

    def job_span(self, job: ClaimedJob) -> AbstractContextManager[object]:
        enqueued = trace.get_current_span(
            _propagator.extract(_carrier(job.traceparent))
        ).get_span_context()
        return self._tracer.start_as_current_span(
            f"job {job.kind}",
            context=Context(),  # a trace of its own, whatever is current in the worker
            kind=SpanKind.CONSUMER,
            links=[Link(enqueued)] if enqueued.is_valid else [],
            attributes={"job.id": str(job.id), "job.kind": job.kind, "job.attempt": job.attempts},
        )

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        return carrier.get("traceparent")


def _carrier(traceparent: str | None) -> Mapping[str, str]:
    return {"traceparent": traceparent} if traceparent else {}
