"""Graceful shutdown with cancellation, as `docker compose stop` and rolling restarts do it:
SIGTERM to the app containers while requests and jobs are in flight."""

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from docker.models.containers import Container

from service.settings import Settings
from stack_facts import eventually
from tests.integration.stack import Stack
from tests.integration.traffic import MixedTraffic
from tests.project import HYPERCORN

ROLLING_RESTART_ROUNDS = 3
# The app keeps serving this long after SIGTERM (test.env leaves the setting's default).
LAME_DUCK = Settings.model_fields["lame_duck_seconds"].default
LIFESPAN_SHUTDOWN = (
    "shutdown: cancelling background tasks",
    "shutdown: background tasks stopped",
    "database pool closed",
    "shutdown complete",
)


@pytest.fixture(scope="module")
def stack(own_stack: Stack) -> Stack:
    return own_stack


@pytest.fixture(autouse=True)
def apps_serving_after(stack: Stack) -> Iterator[None]:
    """Each test leaves the replicas serving, even one that failed with them stopped."""
    yield
    start_apps(stack)


def sigterm_and_wait(stack: Stack, containers: list[Container]) -> list[tuple[int, float]]:
    """SIGTERM every container at once; each one's exit code and seconds to exit."""
    grace = LAME_DUCK + float(stack.env["GRACEFUL_TIMEOUT"]) + HYPERCORN["shutdown_timeout"]
    started = time.monotonic()
    for container in containers:
        container.kill(signal="SIGTERM")
    results = []
    for container in containers:
        status = container.wait(timeout=grace + 10)
        took = time.monotonic() - started
        print(f"{container.name}: exit {status['StatusCode']} after {took:.1f} s")
        results.append((status["StatusCode"], took))
    assert all(took < grace for _, took in results), f"not within the grace period: {results}"
    return results


def start_apps(stack: Stack) -> None:
    """Starts the app replicas that are stopped and waits until the stack serves again."""
    apps = stack.containers("app")
    for container in apps:
        if container.status != "running":
            container.start()
    for container in apps:
        stack.wait_healthy(container)
    stack.wait_until_serving()


def messages(stack: Stack, container: Container) -> list[str]:
    return [str(line.get("message")) for line in stack.logs(container)]


def job_state(stack: Stack, job_id: str) -> tuple[str, int]:
    state, attempts = stack.psql(f"SELECT state, attempts FROM jobs WHERE id = '{job_id}'").split(
        "|"
    )
    return state, int(attempts)


def job_history(stack: Stack, containers: list[Container], job_id: str) -> str:
    """What the replicas logged about one job and about their shutdown, in time order."""
    lines = [
        f"{line.get('time')} {container.name} {line.get('message')}"
        for container in containers
        for line in stack.logs(container)
        if line.get("job_id") == job_id or str(line.get("message")).startswith("shutdown")
    ]
    return "\n".join(sorted(lines))


def test_in_flight_long_poll_completes_and_the_app_exits_cleanly(stack: Stack) -> None:
    with stack.client() as client:
        # Still running when the lame duck ends and the listener closes.
        payload = {"seconds": LAME_DUCK + 4}
        job = client.post("/jobs", json={"kind": "sleep", "payload": payload}).json()
    outcome: dict[str, httpx.Response] = {}

    def long_poll() -> None:
        with stack.client() as client:
            outcome["response"] = client.get(f"/jobs/{job['id']}", params={"wait": 30})

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(1.0)  # the long-poll is in flight and the job is running
    apps = stack.containers("app")
    exits = sigterm_and_wait(stack, apps)
    poller.join(timeout=30)

    response = outcome["response"]
    assert response.status_code == 200
    assert response.json()["state"] == "done", "the in-flight request was cut short"
    assert response.json()["result"] == {"slept": LAME_DUCK + 4}
    assert [code for code, _ in exits] == [0] * len(apps), "killed, not a clean exit"
    for container in apps:
        logged = messages(stack, container)
        for expected in LIFESPAN_SHUTDOWN:
            assert expected in logged, (container.name, expected)


def test_running_job_is_released_by_cancellation_then_completed(stack: Stack) -> None:
    with stack.client() as client:
        # Running past the lame duck, when the lifespan shutdown cancels the workers.
        payload = {"seconds": LAME_DUCK + 6}
        job = client.post("/jobs", json={"kind": "sleep", "payload": payload}).json()
    started = eventually(lambda: job_state(stack, job["id"])[0] == "running", 20, interval=0.2)
    assert started, "the job never started"

    apps = stack.containers("app")
    exits = sigterm_and_wait(stack, apps)
    assert [code for code, _ in exits] == [0] * len(apps)
    assert job_state(stack, job["id"]) == ("queued", 0), (
        "not released by the cancellation:\n" + job_history(stack, apps, job["id"])
    )
    released = [m for c in apps for m in messages(stack, c) if m == "job released on cancellation"]
    assert released, "no worker logged the release"

    start_apps(stack)
    with stack.client() as client:
        finished = client.get(f"/jobs/{job['id']}", params={"wait": 30}).json()
    assert finished["state"] == "done"
    assert finished["attempts"] == 1
    assert stack.psql("SELECT count(*) FROM jobs WHERE state = 'running'") == "0"


def test_rolling_restarts_fail_no_request_of_any_method(stack: Stack) -> None:
    """Three rounds of restarting two replicas one at a time (6 SIGTERMs) under 32 clients of
    mixed reads and writes: no request fails, nothing is lost or done twice."""
    apps = stack.containers("app")
    assert len(apps) == 2
    with MixedTraffic(stack) as traffic:
        time.sleep(2)
        for _ in range(ROLLING_RESTART_ROUNDS):
            for container in apps:
                started = time.monotonic()
                container.restart(timeout=60)
                stack.wait_healthy(container)
                print(f"{container.name} restarted in {time.monotonic() - started:.1f} s")
                time.sleep(2)  # Caddy's DNS refresh picks the replica up again
    traffic.verify()
    assert len(traffic.writes) > 1000


def test_a_killed_replica_costs_no_keyed_write(stack: Stack) -> None:
    """SIGKILL, no drain at all: every request in flight on that replica is cut. Caddy sends
    each read and each keyed write that got no reply again to the other replica, and the app
    answers a repeat of a write that did commit with its first answer. A reply cut after its
    first byte cannot be retried by the edge: the client sees no answer and sends the request
    again with its key, as the Idempotency-Key draft asks of clients, and gets the first
    answer. No request fails and nothing is created twice. (A write without a key would get a
    502 or no answer: SECURITY.md and the README.)"""
    victim = stack.containers("app")[0]
    with MixedTraffic(stack, all_keyed=True, resends=1) as traffic:
        time.sleep(3)
        victim.kill(signal="SIGKILL")
        time.sleep(3)
        start_apps(stack)
        time.sleep(2)
    traffic.verify()
