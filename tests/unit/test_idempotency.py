"""The Idempotency-Key header: one effect per key, replays byte for byte, refusals, expiry."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from service.db import idempotency as queries
from service.db.pool import Pool
from service.domain.idempotency import purge_expired
from service.main import create_app
from service.models import StoredResponse
from tests.unit.conftest import make_settings, run_lifespan

PROBLEM = "application/problem+json"
REPLAYED = "idempotent-replayed"
LAMP = {"name": "lamp", "price_cents": 4200}
JOB = {"kind": "sleep", "payload": {"seconds": 0}}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def count(pool: Pool, table: str) -> int:
    rows: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return rows


@asynccontextmanager
async def in_flight(pool: Pool, key: str) -> AsyncIterator[None]:
    """A first request with this key, held open: its transaction has the key's lock."""
    async with pool.acquire() as first, first.transaction():
        assert await queries.try_lock(first, key)
        yield


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    return body


def assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    assert REPLAYED not in first.headers
    assert replay.headers[REPLAYED] == "true"
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers.get("location") == first.headers.get("location")
    assert replay.headers.get("content-type") == first.headers.get("content-type")


async def test_keyed_create_runs_once_and_replays_its_response(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    first = await client.post("/items", json=LAMP, headers=keyed("create-lamp"))
    assert first.status_code == 201
    again = await client.post("/items", json=LAMP, headers=keyed("create-lamp"))
    assert_replay_of(again, first)
    # The same body with other whitespace and key order is the same request.
    reordered = await client.post(
        "/items",
        content=b'{ "price_cents" : 4200,\n  "name": "lamp" }',
        headers={**keyed("create-lamp"), "content-type": "application/json"},
    )
    assert_replay_of(reordered, first)
    assert await count(pool, "items") == 1


async def test_quoted_and_bare_keys_are_the_same_key(client: httpx.AsyncClient) -> None:
    first = await client.post("/items", json=LAMP, headers=keyed(r'"say \"hi\" \\o/"'))
    assert first.status_code == 201
    assert_replay_of(await client.post("/items", json=LAMP, headers=keyed(r'say "hi" \o/')), first)


async def test_concurrent_duplicates_run_once(client: httpx.AsyncClient, pool: Pool) -> None:
    # Jobs, not items: no unique name stands in for the key's lock here.
    responses = await asyncio.gather(
        *(client.post("/jobs", json=JOB, headers=keyed("race")) for _ in range(5))
    )
    originals = [r for r in responses if r.status_code == 202 and REPLAYED not in r.headers]
    assert len(originals) == 1
    for response in responses:
        if response.status_code == 409:
            assert "still in progress" in problem(response, 409)["detail"]
        elif response is not originals[0]:
            assert_replay_of(response, originals[0])
    assert await count(pool, "jobs") == 1


async def test_a_duplicate_while_the_first_is_in_flight_is_409(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    async with in_flight(pool, "slow"):
        duplicate = await client.post("/items", json=LAMP, headers=keyed("slow"))
        assert "still in progress" in problem(duplicate, 409)["detail"]
    assert await count(pool, "items") == 0
    assert (await client.post("/items", json=LAMP, headers=keyed("slow"))).status_code == 201


async def test_the_key_on_another_request_is_422(client: httpx.AsyncClient, pool: Pool) -> None:
    first = await client.post("/items", json=LAMP, headers=keyed("once"))
    other_body = await client.post("/items", json={**LAMP, "price_cents": 1}, headers=keyed("once"))
    other_route = await client.patch(first.headers["location"], json=LAMP, headers=keyed("once"))
    for refused in (other_body, other_route):
        assert problem(refused, 422)["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await count(pool, "items") == 1


async def test_keyed_job_is_enqueued_once(client: httpx.AsyncClient, pool: Pool) -> None:
    job = {"kind": "sleep", "payload": {"seconds": 0, "fail": False}}
    first = await client.post("/jobs", json=job, headers=keyed("job-1"))
    assert first.status_code == 202
    # Key order inside the payload (a free-form object) does not matter either.
    reordered = {"payload": {"fail": False, "seconds": 0}, "kind": "sleep"}
    assert_replay_of(await client.post("/jobs", json=reordered, headers=keyed("job-1")), first)
    assert await count(pool, "jobs") == 1


async def test_keyed_update_and_delete_replay(client: httpx.AsyncClient, pool: Pool) -> None:
    url = (await client.post("/items", json=LAMP)).headers["location"]
    first = await client.patch(url, json={"price_cents": 1}, headers=keyed("cheaper"))
    assert first.status_code == 200
    updated_at = await pool.fetchval("SELECT updated_at FROM items")
    again = await client.patch(url, json={"price_cents": 1}, headers=keyed("cheaper"))
    assert_replay_of(again, first)
    assert await pool.fetchval("SELECT updated_at FROM items") == updated_at, "updated twice"

    deleted = await client.delete(url, headers=keyed("remove"))
    assert deleted.status_code == 204
    assert_replay_of(await client.delete(url, headers=keyed("remove")), deleted)
    assert (await client.delete(url)).status_code == 404


async def test_a_failed_attempt_stores_nothing_and_can_be_retried(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    taken = await client.post("/items", json=LAMP)
    failed = await client.post("/items", json=LAMP, headers=keyed("retry-me"))
    assert failed.status_code == 409
    assert await count(pool, "idempotency_keys") == 0

    await client.delete(taken.headers["location"])
    retried = await client.post("/items", json=LAMP, headers=keyed("retry-me"))
    assert retried.status_code == 201
    assert REPLAYED not in retried.headers


async def test_the_effect_rolls_back_when_its_response_cannot_be_stored(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    await pool.execute("ALTER TABLE idempotency_keys ADD CONSTRAINT no_jobs CHECK (status <> 202)")
    with pytest.raises(asyncpg.CheckViolationError):
        await client.post("/jobs", json=JOB, headers=keyed("doomed"))
    assert await count(pool, "jobs") == 0


async def test_an_expired_key_counts_as_absent(client: httpx.AsyncClient, pool: Pool) -> None:
    first = await client.post("/jobs", json=JOB, headers=keyed("stale"))
    await pool.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    again = await client.post("/jobs", json=JOB, headers=keyed("stale"))
    assert again.status_code == 202
    assert REPLAYED not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert_replay_of(await client.post("/jobs", json=JOB, headers=keyed("stale")), again)


async def store_expiring(pool: Pool, key: str, ttl: float) -> None:
    response = StoredResponse(status=204, body=None, location=None)
    async with pool.acquire() as connection:
        await queries.store(connection, key, "fingerprint", response, ttl)


async def test_expired_keys_are_purged_in_batches(pool: Pool) -> None:
    for number in range(5):
        await store_expiring(pool, f"old-{number}", ttl=-1)
    await store_expiring(pool, "live", ttl=60)
    assert await purge_expired(pool, batch=2) == 5
    assert await pool.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["live"]


async def test_the_lifespan_purges_expired_keys(database_url: str, pool: Pool) -> None:
    await store_expiring(pool, "old", ttl=-1)
    app = create_app(make_settings(database_url, idempotency_purge_interval=0.05))
    async with run_lifespan(app), asyncio.timeout(10):
        while await count(pool, "idempotency_keys"):
            await asyncio.sleep(0.05)


MALFORMED = [
    "",
    "x" * 256,
    '"' + "x" * 256 + '"',
    '""',
    '"unterminated',
    r'"bad \escape"',
    "tab\tinside",
    "del\x7f",
    "é",
]


async def test_a_malformed_key_is_400(client: httpx.AsyncClient, pool: Pool) -> None:
    for value in MALFORMED:
        header = {b"Idempotency-Key": value.encode("latin-1")}
        response = await client.post("/items", json=LAMP, headers=header)
        assert "Idempotency-Key" in problem(response, 400)["detail"], value
    assert await count(pool, "items") == 0


async def test_the_longest_keys_are_accepted(client: httpx.AsyncClient) -> None:
    for key in ("b" * 255, '"' + "q" * 255 + '"'):
        response = await client.post("/items", json={**LAMP, "name": key[:9]}, headers=keyed(key))
        assert response.status_code == 201


async def test_requests_without_a_key_are_unchanged(client: httpx.AsyncClient, pool: Pool) -> None:
    jobs = [await client.post("/jobs", json=JOB) for _ in range(2)]
    assert [job.status_code for job in jobs] == [202, 202]
    assert jobs[0].json()["id"] != jobs[1].json()["id"]
    assert all(REPLAYED not in job.headers for job in jobs)
    assert await count(pool, "idempotency_keys") == 0


async def test_outcomes_are_counted(client: httpx.AsyncClient, pool: Pool) -> None:
    for _ in range(2):
        await client.post("/items", json=LAMP, headers=keyed("counted"))
    await client.post("/items", json={**LAMP, "price_cents": 1}, headers=keyed("counted"))
    async with in_flight(pool, "held"):
        await client.post("/items", json=LAMP, headers=keyed("held"))
    metrics = (await client.get("/metrics")).text
    for outcome in ("stored", "replayed", "mismatch", "in_flight"):
        assert f'idempotency_requests_total{{outcome="{outcome}"}} 1.0' in metrics


async def test_openapi_documents_the_header_and_its_problems(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, method in [
        ("/items", "post"),
        ("/jobs", "post"),
        ("/items/{item_id}", "patch"),
        ("/items/{item_id}", "delete"),
    ]:
        operation = paths[path][method]
        (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header"
        assert not header["required"]
        assert "draft-ietf-httpapi-idempotency-key-header" in header["description"]
        for status in ("400", "409", "422"):
            assert PROBLEM in operation["responses"][status]["content"]
    assert all(
        p["name"] != "Idempotency-Key" for p in paths["/items/{item_id}"]["get"]["parameters"]
    )
