"""Liveness, readiness, the proxy view, metrics, request ids and the error shape of the edges."""

import asyncio
import json
import logging

import asyncpg
import httpx

from service.logs import JsonFormatter
from service.main import create_app
from tests.unit.conftest import make_settings, run_lifespan


async def test_healthz_reports_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "dev"}


async def test_readyz_pings_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_whoami_trusts_exactly_one_proxy_hop(client: httpx.AsyncClient) -> None:
    # Caddy appends the address it saw to whatever the client sent: only the last is trusted.
    response = await client.get(
        "/whoami",
        headers={
            "x-forwarded-for": "6.6.6.6, 203.0.113.7",
            "x-forwarded-proto": "https",
            "x-forwarded-host": "example.com",
        },
    )
    seen = response.json()
    assert seen["client"] == "203.0.113.7"
    assert seen["scheme"] == "https"
    assert seen["host"] == "example.com"
    assert seen["url"] == "https://example.com/whoami"
    assert seen["forwarding_headers"]["x-forwarded-for"] == "6.6.6.6, 203.0.113.7"


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz", headers={"x-request-id": "bad id\x7f"})
    assert len(generated.headers["x-request-id"]) == 32


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.put("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, HEAD"
    assert wrong_method.json()["title"] == "Method Not Allowed"


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/items/12345")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/items/{item_id}",status="404"} 1.0' in text
    assert "db_pool_connections" in text
    assert "http_request_duration_seconds_bucket" in text


async def test_metrics_show_the_wal_archive_and_the_newest_backups(database_url: str) -> None:
    # What the backup service writes (postgres/backup-scheduler's mirror of the repository).
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            """CREATE SCHEMA backup;
               CREATE TABLE backup.backups (
                   label text PRIMARY KEY, type text NOT NULL, stopped_at timestamptz NOT NULL);
               INSERT INTO backup.backups VALUES
                   ('20261201-100000F', 'full', to_timestamp(1764583200)),
                   ('20261201-100000F_20261201-120000D', 'diff', to_timestamp(1764590400)),
                   ('20261130-100000F', 'full', to_timestamp(1764496800))"""
        )
    finally:
        await connection.close()
    app = create_app(make_settings(database_url, stats_interval=0.1))
    async with (
        run_lifespan(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app), base_url="http://testserver"
        ) as client,
    ):
        await asyncio.sleep(0.3)  # a stats round or more
        text = (await client.get("/metrics")).text
    assert 'backup_last_success_timestamp_seconds{type="full"} 1.7645832e+09' in text
    assert 'backup_last_success_timestamp_seconds{type="diff"} 1.7645904e+09' in text
    # The test Postgres archives nothing: the gauges are there, at zero.
    assert "postgres_wal_archived 0.0" in text
    assert "postgres_wal_last_archive_failure_timestamp_seconds 0.0" in text


class AccessLines(logging.Handler):
    """The access lines as they are written (formatted at once: the request id is the log
    context's while the request runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def __enter__(self) -> "AccessLines":
        logger = logging.getLogger("service.access")
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger("service.access").removeHandler(self)


async def test_each_request_writes_one_access_line(client: httpx.AsyncClient) -> None:
    headers = {"x-request-id": "access-1", "x-forwarded-for": "203.0.113.9", "user-agent": "t/1"}
    with AccessLines() as access:
        response = await client.get("/items/999999?secret=no", headers=headers)
    assert response.status_code == 404
    (line,) = access.lines
    assert line["message"] == "request"
    assert line["request_id"] == "access-1"
    assert line["client"] == "203.0.113.9"  # as the trusted hop saw it
    assert (line["method"], line["path"], line["status"]) == ("GET", "/items/999999", 404)
    assert line["bytes"] == len(response.content)
    assert line["protocol"] == "HTTP/1.1"
    assert line["user_agent"] == "t/1"
    assert isinstance(line["duration_us"], int)
    assert line["duration_us"] > 0


async def test_the_access_line_can_be_switched_off(database_url: str) -> None:
    app = create_app(make_settings(database_url, access_log=False))
    with AccessLines() as access:
        async with run_lifespan(app) as manager:
            transport = httpx.ASGITransport(manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                assert (await http.get("/healthz")).status_code == 200
    assert access.lines == []
