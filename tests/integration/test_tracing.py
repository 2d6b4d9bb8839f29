"""Tracing through the real stack (README "Observability"): Caddy and the app export over
OTLP/HTTP to the test receiver (tests/integration/otlp_receiver), on a stack of this module's
own, so the shared stack stays untraced. One request that creates a job gives one trace,
Caddy's span -> the app's route span -> the pool acquire and the SQL, and the job's trace
links to it; a client's traceparent is dropped at the edge; with tracing off nothing is
exported."""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack_facts import eventually
from tests.integration.stack import Stack

RECEIVER_PORT = 60618
OVERLAY = "tests/integration/otlp_receiver/compose.yaml"
TRACED = {
    "HTTP_PORT": "60680",
    "HTTPS_PORT": "60643",
    "OTLP_RECEIVER_PORT": str(RECEIVER_PORT),
    "EDGE_TRACING": "on",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otlp-receiver:4318",
}
CLIENT_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# Where the job request's spans are kept (scripts/trace-waterfall draws docs/trace-waterfall.png).
SPANS_FILE = "trace-spans.json"

Span = dict[str, Any]


@pytest.fixture(scope="module")
def traced(stack_workdir: Path) -> Iterator[Stack]:
    stack = Stack("service-trace", stack_workdir, overrides=TRACED, overlays=(OVERLAY,))
    with stack.running() as running:
        yield running


def received() -> list[Span]:
    spans: list[Span] = httpx.get(f"http://127.0.0.1:{RECEIVER_PORT}/spans").json()
    return spans


def forget_spans() -> None:
    httpx.delete(f"http://127.0.0.1:{RECEIVER_PORT}/spans").raise_for_status()


def spans_of(user_agent: str, expected: int, timeout: float = 15) -> list[Span]:
    """Every span of the traces whose edge or route span came from a request sent with this
    user agent, and of the traces linked to them, once there are `expected` of them."""
    found: list[Span] = []

    def complete() -> bool:
        nonlocal found
        spans = received()
        traces = {
            s["trace_id"] for s in spans if s["attributes"].get("user_agent.original") == user_agent
        }
        linked = {
            s["trace_id"] for s in spans if any(link["trace_id"] in traces for link in s["links"])
        }
        found = [s for s in spans if s["trace_id"] in traces | linked]
        return len(found) >= expected

    eventually(complete, timeout, interval=0.2)
    return found


def one(spans: list[Span], **fields: Any) -> Span:
    matching = [s for s in spans if all(s[k] == v for k, v in fields.items())]
    assert len(matching) == 1, f"{fields}: {[(s['service'], s['name']) for s in spans]}"
    return matching[0]


def app_lines_of(stack: Stack, request_id: str, since: datetime) -> list[dict[str, object]]:
    return [
        line
        for container in stack.containers("app")
        for line in stack.logs(container, since=since)
        if line.get("request_id") == request_id
    ]


def test_a_request_that_creates_a_job_is_one_trace_with_the_job_linked(
    traced: Stack, stack_workdir: Path
) -> None:
    started = time.monotonic()
    since = datetime.now(UTC)
    agent = f"tracing-test-{uuid.uuid4().hex[:8]}"
    # A key no replica has seen: its lookup is always in the trace (a cached one is not).
    key = traced.create_key(agent, ("jobs:read", "jobs:write"))
    with traced.client(headers={"user-agent": agent, "Authorization": f"Bearer {key}"}) as client:
        created = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0.2}})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        done = client.get(f"/jobs/{job_id}", params={"wait": 10}, headers={"user-agent": "other"})
        assert done.json()["state"] == "done"

    # caddy, route, the key's lookup (pool.acquire, SELECT), pool.acquire, INSERT; the job's
    # span and its UPDATE.
    spans = spans_of(agent, expected=8)
    edge = one(spans, service="service-edge", name="caddy")
    assert edge["kind"] == 2, "SERVER"
    assert edge["parent_span_id"] is None, "a trace starts at the edge"
    assert edge["attributes"]["url.path"] == "/jobs"
    trace_id = edge["trace_id"]

    route = one(spans, service="service", name="POST /jobs")
    assert (route["trace_id"], route["parent_span_id"]) == (trace_id, edge["span_id"])
    assert route["attributes"]["http.route"] == "/jobs"
    under_route = [s for s in spans if s["parent_span_id"] == route["span_id"]]
    assert sorted(s["name"] for s in under_route) == [
        "INSERT",
        "SELECT",
        "pool.acquire",
        "pool.acquire",
    ]
    assert all(s["trace_id"] == trace_id for s in under_route)
    lookup = one(under_route, name="SELECT")
    assert "FROM api_keys" in lookup["attributes"]["db.statement"]
    insert = one(under_route, name="INSERT")
    assert "INSERT INTO jobs" in insert["attributes"]["db.statement"]
    assert "db.statement.parameters" not in insert["attributes"]

    job = one(spans, name="job sleep")
    assert job["trace_id"] != trace_id
    assert job["parent_span_id"] is None
    assert job["attributes"]["job.id"] == job_id
    assert [(link["trace_id"], link["span_id"]) for link in job["links"]] == [
        (trace_id, route["span_id"])
    ]
    assert "UPDATE" in {s["name"] for s in spans if s["parent_span_id"] == job["span_id"]}

    lines = app_lines_of(traced, created.headers["x-request-id"], since)
    access = [line for line in lines if line["logger"] == "service.access"]
    assert len(access) == 1, lines
    assert (access[0]["trace_id"], access[0]["span_id"]) == (trace_id, route["span_id"])
    (stack_workdir / SPANS_FILE).write_text(json.dumps(spans, indent=1))
    print(f"trace {trace_id}: {len(spans)} spans in {stack_workdir / SPANS_FILE}")
    print(f"traced request checked in {time.monotonic() - started:.1f} s")


def test_a_client_traceparent_is_dropped_at_the_edge(traced: Stack) -> None:
    agent = f"tracing-test-{uuid.uuid4().hex[:8]}"
    with traced.client(headers={"user-agent": agent, "traceparent": CLIENT_TRACEPARENT}) as client:
        assert client.get("/whoami").status_code == 200
    spans = spans_of(agent, expected=2)
    edge = one(spans, service="service-edge")
    route = one(spans, service="service", name="GET /whoami")
    client_trace = CLIENT_TRACEPARENT.split("-")[1]
    assert edge["trace_id"] != client_trace
    assert edge["parent_span_id"] is None
    assert (route["trace_id"], route["parent_span_id"]) == (edge["trace_id"], edge["span_id"])


def test_with_tracing_off_nothing_is_exported(traced: Stack) -> None:
    """Last: the same project, recreated as .env.example leaves it (runs after the others)."""
    off = {"EDGE_TRACING": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    traced.run("up", "--detach", "--wait", variables=off)
    traced.wait_until_serving()
    forget_spans()
    since = datetime.now(UTC)
    with traced.client(headers={"traceparent": CLIENT_TRACEPARENT}) as client:
        created = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0}})
        assert created.status_code == 202
        done = client.get(f"/jobs/{created.json()['id']}", params={"wait": 10})
        assert done.json()["state"] == "done"
    time.sleep(2)  # 20 export intervals of both SDKs, were they running
    assert received() == []
    lines = app_lines_of(traced, created.headers["x-request-id"], since)
    assert lines
    assert all("trace_id" not in line for line in lines)
