"""Postgres stops for a few seconds under a steady stream of requests, seen from the edge:
readiness and the API answer 503 with Retry-After (never 500, never a hang), liveness stays
200, and the stack recovers on its own when Postgres is back, without restarting the app."""

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import cycle

import httpx
import pytest

from tests.integration.stack import Stack

OUTAGE_SECONDS = 6


@dataclass(frozen=True)
class Outcome:
    phase: str
    request: str
    status: int | None  # None: no HTTP answer at all (a transport error or a timeout)
    content_type: str | None
    retry_after: str | None


class SteadyTraffic:
    """A few clients sending a fixed mix of requests back to back until stopped."""

    def __init__(self, stack: Stack, job_id: str) -> None:
        self.stack = stack
        self.phase = "before"
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._requests = [
            ("GET", "/readyz", None),
            ("GET", "/items", None),
            ("POST", "/items", "item"),
            ("GET", "/healthz", None),
            ("GET", f"/jobs/{job_id}", None),
            ("POST", "/jobs", "job"),
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(http2, job_id))
            for http2 in (False, True, False)
        ]

    def __enter__(self) -> "SteadyTraffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, http2: bool, job_id: str) -> None:
        # Longer than anything the app may take (pool acquire and connect timeouts are 5 s):
        # a request still unanswered by then is a hang.
        with self.stack.client(http2=http2) as client:
            client.timeout = httpx.Timeout(20)
            for method, path, body in cycle(self._requests):
                if self._stop.is_set():
                    return
                phase = self.phase
                key = f"{method} {path.removesuffix(f'/{job_id}')}"
                try:
                    response = client.request(method, path, json=self._body(body))
                except httpx.HTTPError:
                    self.outcomes.append(Outcome(phase, key, None, None, None))
                    continue
                headers = response.headers
                self.outcomes.append(
                    Outcome(
                        phase,
                        key,
                        response.status_code,
                        headers.get("content-type"),
                        headers.get("retry-after"),
                    )
                )
                time.sleep(0.02)

    @staticmethod
    def _body(kind: str | None) -> dict[str, object] | None:
        if kind == "item":
            return {"name": f"outage-{uuid.uuid4()}", "price_cents": 1}
        if kind == "job":
            return {"kind": "sleep", "payload": {"seconds": 0}}
        return None

    def seen(self, phase: str) -> Iterator[Outcome]:
        return (outcome for outcome in self.outcomes if outcome.phase == phase)


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


def test_a_database_outage_seen_from_the_edge(stack: Stack) -> None:
    apps = stack.containers("app")
    started = {
        app.name: (app.attrs["State"]["StartedAt"], app.attrs["RestartCount"]) for app in apps
    }
    db = stack.container("db")
    with stack.client() as client:
        job = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0}})
    assert job.status_code == 202

    with SteadyTraffic(stack, job.json()["id"]) as traffic:
        time.sleep(2)
        traffic.phase = "down"
        db.stop(timeout=10)
        time.sleep(OUTAGE_SECONDS)
        traffic.phase = "recovering"
        db.start()
        stack.wait_healthy(db)
        stack.wait_until_serving(timeout=60)
        traffic.phase = "after"
        time.sleep(2)

    answered = [outcome for outcome in traffic.outcomes if outcome.status is not None]
    assert len(answered) == len(traffic.outcomes), "requests without an HTTP answer (hangs)"
    assert {o.status for o in answered} <= {200, 201, 202, 503}, "no 500, 502 or 504"
    for outcome in answered:
        if outcome.status == 503:
            assert outcome.content_type == "application/problem+json", outcome
            assert outcome.retry_after == "5", outcome

    down = list(traffic.seen("down"))
    failed = {o.request for o in down if o.status == 503}
    assert {"GET /readyz", "GET /items", "POST /items", "GET /jobs", "POST /jobs"} <= failed
    assert {o.status for o in down if o.request == "GET /healthz"} == {200}, "liveness, no I/O"
    assert {o.status for o in traffic.seen("before")} <= {200, 201, 202}
    assert {o.status for o in traffic.seen("after")} <= {200, 201, 202}

    # Recovered in place: same containers, never restarted...
    for app in stack.containers("app"):
        app.reload()
        assert (app.attrs["State"]["StartedAt"], app.attrs["RestartCount"]) == started[app.name]
    # ...and the job workers resumed on their own.
    with stack.client() as client:
        job = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0}})
        finished = client.get(f"/jobs/{job.json()['id']}", params={"wait": 60}, timeout=70)
    assert finished.json()["state"] == "done"
