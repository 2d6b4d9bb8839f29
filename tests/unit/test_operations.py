"""Liveness, readiness, the proxy view, metrics, request ids and the error shape of the edges."""

import httpx


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
    assert wrong_method.headers["allow"] == "GET"
    assert wrong_method.json()["title"] == "Method Not Allowed"


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/items/12345")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/items/{item_id}",status="404"} 1.0' in text
    assert "db_pool_connections" in text
    assert "http_request_duration_seconds_bucket" in text
