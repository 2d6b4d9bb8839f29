"""The job queue through the API: enqueue, state, long-poll, validation, retries."""

import time

import httpx


async def enqueue(client: httpx.AsyncClient, **job: object) -> dict[str, object]:
    response = await client.post("/jobs", json={"kind": "sleep", **job})
    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(f"/jobs/{response.json()['id']}")
    body: dict[str, object] = response.json()
    return body


async def test_job_runs_to_done_and_long_poll_returns_when_it_does(
    client: httpx.AsyncClient,
) -> None:
    job = await enqueue(client, payload={"seconds": 0.3})
    assert job["state"] == "queued"
    started = time.monotonic()
    finished = (await client.get(f"/jobs/{job['id']}", params={"wait": 10})).json()
    elapsed = time.monotonic() - started
    assert finished["state"] == "done"
    assert finished["result"] == {"slept": 0.3}
    assert finished["attempts"] == 1
    assert elapsed < 5, "the long-poll should return when the job finishes, not at its timeout"


async def test_long_poll_returns_the_current_state_at_its_timeout(
    client: httpx.AsyncClient,
) -> None:
    job = await enqueue(client, payload={"seconds": 30})
    started = time.monotonic()
    polled = (await client.get(f"/jobs/{job['id']}", params={"wait": 0.5})).json()
    assert polled["state"] in {"queued", "running"}
    assert 0.5 <= time.monotonic() - started < 3


async def test_wait_is_bounded(client: httpx.AsyncClient) -> None:
    job = await enqueue(client, payload={"seconds": 0})
    response = await client.get(f"/jobs/{job['id']}", params={"wait": 61})
    assert response.status_code == 422


async def test_unknown_kind_and_bad_payload_are_422_with_fields(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/jobs", json={"kind": "teleport"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["body", "kind"]

    bad = await client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": -1}})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["body", "payload", "seconds"]


async def test_missing_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert (await client.get("/jobs/not-a-uuid")).status_code == 422


async def test_failing_job_ends_failed_after_its_attempts(client: httpx.AsyncClient) -> None:
    job = await enqueue(client, payload={"seconds": 0, "fail": True}, max_attempts=1)
    finished = (await client.get(f"/jobs/{job['id']}", params={"wait": 10})).json()
    assert finished["state"] == "failed"
    assert finished["attempts"] == 1
    assert "SleepFailed" in finished["error"]
