"""Postgres stops for a few seconds under a steady stream of requests, seen from the edge:
readiness and the API answer 503 with Retry-After (never 500, never a hang), liveness stays
200, and the stack recovers on its own when Postgres is back, without restarting the app."""

import time

import pytest

from tests.integration.stack import Stack
from tests.integration.traffic import EXPECTED, MixedTraffic

OUTAGE_SECONDS = 6
# What the API may answer while Postgres is away: 503 with Retry-After, never 500, 502 or 504.
UNAVAILABLE = 503


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


def test_a_database_outage_seen_from_the_edge(stack: Stack) -> None:
    apps = stack.containers("app")
    started = {
        app.name: (app.attrs["State"]["StartedAt"], app.attrs["RestartCount"]) for app in apps
    }
    db = stack.container("db")
    with MixedTraffic(stack) as traffic:
        time.sleep(2)
        stopping = time.monotonic()
        db.stop(timeout=10)
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS / 2)
        with stack.client() as client:
            readiness = client.get("/readyz")
        time.sleep(OUTAGE_SECONDS / 2)
        restarting = time.monotonic()
        db.start()
        stack.wait_healthy(db)
        stack.wait_until_serving(timeout=60)
        recovered = time.monotonic()
        time.sleep(2)
    print(f"outage: {traffic.summary()}")

    assert readiness.status_code == UNAVAILABLE
    no_answer = [o for o in traffic.outcomes if o.status is None]
    assert no_answer == [], f"requests without an HTTP answer (hangs): {no_answer[:5]}"
    wrong = [o for o in traffic.unexpected if o.status != UNAVAILABLE]
    assert wrong == [], f"not the answer, nor 503: {wrong[:5]}"
    for outcome in traffic.unexpected:
        assert outcome.content_type == "application/problem+json", outcome
        assert outcome.retry_after == "5", outcome

    down = [o for o in traffic.outcomes if stopped + 0.5 < o.at < restarting]
    unavailable = {o.request for o in down if o.status == UNAVAILABLE}
    # Every request that needs the database; the clients change and delete only what they
    # have just created, so no PATCH or DELETE is sent while creating fails.
    needs_the_database = set(EXPECTED) - {"GET /healthz", "PATCH /items/{id}", "DELETE /items/{id}"}
    assert needs_the_database <= unavailable
    assert {o.status for o in down if o.request == "GET /healthz"} == {200}, "liveness, no I/O"
    assert all(o.expected for o in traffic.outcomes if o.at < stopping), "before the outage"
    assert all(o.expected for o in traffic.outcomes if o.at > recovered + 1), "after recovery"
    # What the API answered before, during and after is what the database holds.
    traffic.verify_data()

    # Recovered in place: same containers, never restarted...
    for app in stack.containers("app"):
        app.reload()
        assert (app.attrs["State"]["StartedAt"], app.attrs["RestartCount"]) == started[app.name]
    # ...and the job workers resumed on their own.
    with stack.client() as client:
        job = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0}})
        finished = client.get(f"/jobs/{job.json()['id']}", params={"wait": 60}, timeout=70)
    assert finished.json()["state"] == "done"
