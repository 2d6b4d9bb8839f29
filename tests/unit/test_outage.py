"""The database goes away and comes back: 503 with Retry-After, then recovery, no restart.

This test owns its Postgres container (stopping the shared one would break other tests) and
binds it to a fixed host port so that the restarted server is at the same address.
"""

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from testcontainers.community.postgres import PostgresContainer

from service.main import create_app
from tests.unit.conftest import POSTGRES_IMAGE, keyed_client, make_settings
from tests.unit.test_metrics import until_metric


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def own_postgres() -> Iterator[PostgresContainer]:
    container = PostgresContainer(POSTGRES_IMAGE, driver=None).with_bind_ports(5432, free_port())
    with container:
        yield container


@pytest.fixture
async def outage_client(own_postgres: PostgresContainer) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        own_postgres.get_connection_url(), db_acquire_timeout=2.0, db_connect_timeout=2.0
    )
    async with keyed_client(create_app(settings), settings.database_url) as c:
        yield c


async def until_status(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    async with asyncio.timeout(60):
        while True:
            response = await client.get(path)
            if response.status_code == status:
                return response
            await asyncio.sleep(0.2)


async def test_database_outage_is_503_and_recovers_without_restart(
    own_postgres: PostgresContainer, outage_client: httpx.AsyncClient
) -> None:
    created = await outage_client.post("/items", json={"name": "before", "price_cents": 1})
    assert created.status_code == 201
    item_url = created.headers["location"]

    await asyncio.to_thread(own_postgres.get_wrapped_container().stop, timeout=10)

    not_ready = await until_status(outage_client, "/readyz", 503)
    await until_metric(outage_client, "app_ready 0.0")  # what the alert rules see
    assert not_ready.headers["content-type"] == "application/problem+json"
    for _ in range(3):  # the first calls meet broken pooled connections, later ones refusal
        down = await outage_client.get(item_url)
        assert down.status_code == 503
        assert down.headers["retry-after"] == "5"
        assert down.json()["detail"] == "database unreachable"
        assert "Traceback" not in down.text
    write = await outage_client.post("/items", json={"name": "during", "price_cents": 1})
    assert write.status_code == 503
    assert (await outage_client.get("/healthz")).status_code == 200, "liveness must not fail"

    await asyncio.to_thread(own_postgres.get_wrapped_container().start)

    await until_status(outage_client, "/readyz", 200)
    await until_metric(outage_client, "app_ready 1.0")
    assert (await outage_client.get(item_url)).json()["name"] == "before"
    after = await outage_client.post("/items", json={"name": "after", "price_cents": 1})
    assert after.status_code == 201
