"""Tracing (service/tracing.py, service/otel.py): off, nothing of OpenTelemetry is loaded; on,
one request that enqueues a job gives the span tree the README describes, on a real Postgres,
with an in-memory exporter standing in for the collector."""

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from service.main import create_app
from service.otel import NoOrphanQueries, OpenTelemetryTracing
from service.tracing import tracing_requested
from tests.project import ROOT, render_compose
from tests.unit.conftest import keyed_client, make_settings

RECEIVER_DOCKERFILE = ROOT / "tests" / "integration" / "otlp_receiver" / "Dockerfile"
# FastAPI imports OpenTelemetry's API itself (its native telemetry, inactive while no global
# provider is set, and the app never sets one); the SDK, the instrumentations, the exporter
# and service/otel.py are the app's, and what tracing costs.
TRACING_MODULES = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")
NOT_IMPORTED_CHECK = (
    "import sys; import service.main;"
    f" print(sorted({{m.rsplit('.', 1)[0] for m in sys.modules if m.startswith({TRACING_MODULES!r})"
    " or m == 'service.otel'}))"
)


def imported_opentelemetry(**variables: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", NOT_IMPORTED_CHECK],
        cwd=ROOT,
        env={**environ, **variables},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_with_no_endpoint_no_opentelemetry_module_is_even_imported() -> None:
    assert imported_opentelemetry() == "[]"
    assert imported_opentelemetry(OTEL_SERVICE_NAME="app", OTEL_TRACES_SAMPLER="always_on") == "[]"
    # The same check sees the SDK when tracing is on.
    assert imported_opentelemetry(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9") != "[]"


@pytest.mark.parametrize(
    ("variables", "requested"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"},
            False,
        ),
    ],
)
def test_tracing_is_on_only_with_an_endpoint(variables: dict[str, str], requested: bool) -> None:
    assert tracing_requested(variables) is requested


def test_the_receiver_image_decodes_with_the_locked_opentelemetry_proto() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = next(p["version"] for p in lock["package"] if p["name"] == "opentelemetry-proto")
    pinned = re.search(r"ARG OPENTELEMETRY_PROTO=(\S+)", RECEIVER_DOCKERFILE.read_text())
    assert pinned is not None
    assert pinned.group(1) == locked


@dataclass
class Traced:
    client: httpx.AsyncClient
    exporter: InMemorySpanExporter
    log: io.StringIO
    database_url: str

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


async def traced_app(
    database_url: str, json_log: io.StringIO, **overrides: object
) -> AsyncIterator[Traced]:
    settings = make_settings(database_url, **overrides)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=NoOrphanQueries(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, tracing=OpenTelemetryTracing(provider, settings))
    async with keyed_client(app, database_url) as client:
        # The key's first lookup (a query) is cached for the test: its spans are not the test's.
        assert (await client.get("/items")).status_code == 200
        exporter.clear()
        yield Traced(client, exporter, json_log, database_url)


@pytest.fixture
async def traced(database_url: str, json_log: io.StringIO) -> AsyncIterator[Traced]:
    async for running in traced_app(database_url, json_log):
        yield running


async def enqueue_and_finish(traced: Traced) -> tuple[httpx.Response, str]:
    created = await traced.client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0}})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    finished = await traced.client.get(f"/jobs/{job_id}", params={"wait": 10})
    assert finished.json()["state"] == "done"
    # The worker's span ends after the commit that the long-poll saw: wait for its export.
    async with asyncio.timeout(5):
        while "job sleep" not in {span.name for span in traced.spans()}:
            await asyncio.sleep(0.01)
    return created, job_id


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{name}: {[span.name for span in spans]}"
    return found[0]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_request_that_enqueues_a_job_gives_one_linked_span_tree(traced: Traced) -> None:
    _created, job_id = await enqueue_and_finish(traced)
    spans = traced.spans()
    route = only(spans, "POST /jobs")
    assert route.kind == SpanKind.SERVER
    assert route.parent is None
    assert route.attributes is not None
    assert route.attributes["http.route"] == "/jobs"

    under_route = children(spans, route)
    assert sorted(span.name for span in under_route) == ["INSERT", "pool.acquire"]
    insert = only(under_route, "INSERT")
    assert insert.kind == SpanKind.CLIENT
    assert insert.attributes is not None
    assert "INSERT INTO jobs" in str(insert.attributes["db.statement"])
    assert "db.statement.parameters" not in insert.attributes
    acquire = only(under_route, "pool.acquire")
    assert acquire.end_time is not None
    assert insert.start_time is not None
    assert acquire.end_time <= insert.start_time, "the connection is held before the INSERT"

    job = only(spans, "job sleep")
    assert job.kind == SpanKind.CONSUMER
    assert job.parent is None
    assert job.context.trace_id != route.context.trace_id, "a job is a trace of its own"
    assert [link.context.span_id for link in job.links] == [route.context.span_id]
    assert job.links[0].context.trace_id == route.context.trace_id
    assert job.attributes is not None
    assert job.attributes["job.id"] == job_id
    assert "UPDATE" in {span.name for span in children(spans, job)}, "the job's outcome"

    # A worker's claim every poll interval would be a trace of one span each: none recorded.
    orphans = [s.name for s in spans if s.kind == SpanKind.CLIENT and s.parent is None]
    assert orphans == []

    connection = await asyncpg.connect(traced.database_url)
    try:
        stored = await connection.fetchval("SELECT traceparent FROM jobs WHERE id = $1", job_id)
    finally:
        await connection.close()
    version, trace_id, span_id, flags = stored.split("-")
    assert (version, trace_id) == ("00", format_trace_id(route.context.trace_id))
    assert span_id == format_span_id(route.context.span_id)
    assert int(flags, 16) & 1, "sampled"


async def test_log_lines_inside_a_span_carry_its_ids_next_to_the_request_id(
    traced: Traced,
) -> None:
    created, job_id = await enqueue_and_finish(traced)
    spans = traced.spans()
    route, job = only(spans, "POST /jobs"), only(spans, "job sleep")
    lines = traced.log_lines()
    access = [
        line
        for line in lines
        if line["logger"] == "service.access"
        and line.get("request_id") == created.headers["x-request-id"]
    ]
    assert len(access) == 1
    assert access[0]["trace_id"] == format_trace_id(route.context.trace_id)
    assert access[0]["span_id"] == format_span_id(route.context.span_id)
    started = [
        line for line in lines if line["message"] == "job started" and line["job_id"] == job_id
    ]
    assert started[0]["trace_id"] == format_trace_id(job.context.trace_id)
    assert started[0]["span_id"] == format_span_id(job.context.span_id)
    outside = [line for line in lines if line["message"] == "started"]  # the lifespan's
    assert outside
    assert all("trace_id" not in line for line in outside)


async def test_a_client_traceparent_is_continued_by_the_app(traced: Traced) -> None:
    """The app trusts its one upstream, Caddy; what a client sends is the edge's to decide
    (caddy/Caddyfile, EDGE_CLIENT_TRACEPARENT)."""
    sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await traced.client.get("/whoami", headers={"traceparent": sent})
    route = only(traced.spans(), "GET /whoami")
    assert format_trace_id(route.context.trace_id) == "0af7651916cd43dd8448eb211c80319c"
    assert route.parent is not None
    assert format_span_id(route.parent.span_id) == "b7ad6b7169203331"


async def test_sql_parameters_are_recorded_only_when_asked(
    database_url: str, json_log: io.StringIO
) -> None:
    async for traced in traced_app(database_url, json_log, trace_sql_parameters=True):
        await enqueue_and_finish(traced)
        insert = only(traced.spans(), "INSERT")
        assert insert.attributes is not None
        assert "sleep" in str(insert.attributes["db.statement.parameters"])


async def test_probes_are_not_traced(traced: Traced) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await traced.client.get(path)).status_code == 200
    await traced.client.get("/whoami")
    assert [span.name for span in traced.spans()] == ["GET /whoami"]


def test_the_tracing_overlay_turns_tracing_on_with_its_ui_on_loopback() -> None:
    services = render_compose("compose.yaml", "compose.tracing.yaml")["services"]
    assert [port["host_ip"] for port in services["jaeger"]["ports"]] == ["127.0.0.1"]
    assert services["proxy"]["environment"]["EDGE_TRACING"] == "on"
    for name in ("proxy", "app"):
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://jaeger:4318", name
    assert "edge" in services["jaeger"]["networks"]
