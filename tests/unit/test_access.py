"""API keys and scopes, through the app on a real Postgres: who gets which answer, what is
stored, what is logged, the cache's revocation bound, and the command line."""

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest
from fastapi import APIRouter

from service import keys as cli
from service.api.access import AUTHORIZED, ROUTE_SCOPES, check_route_scopes
from service.db.pool import Reachability, Turns
from service.domain.errors import InvalidKey
from service.domain.keys import Authenticator, KeyService, digest
from service.main import create_app
from service.models import Scope
from service.settings import Settings
from tests.unit.conftest import bearer, make_key, make_settings, run_lifespan

ITEM = {"name": "guarded", "price_cents": 1}
# A request to each guarded route; bodies valid, so only access decides the answer.
REQUESTS = {
    ("GET", "/items"): ("GET", "/items", None),
    ("GET", "/items/{item_id}"): ("GET", "/items/1", None),
    ("POST", "/items"): ("POST", "/items", ITEM),
    ("PATCH", "/items/{item_id}"): ("PATCH", "/items/1", {"price_cents": 2}),
    ("DELETE", "/items/{item_id}"): ("DELETE", "/items/1", None),
    ("GET", "/jobs/{job_id}"): ("GET", "/jobs/00000000-0000-0000-0000-000000000000", None),
    ("POST", "/jobs"): ("POST", "/jobs", {"kind": "sleep", "payload": {"seconds": 0}}),
}


@pytest.fixture
async def anonymous(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app, and a client that sends no key (each test adds its own)."""
    async with run_lifespan(create_app(settings)) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def send(
    client: httpx.AsyncClient, route: tuple[str, str], key: str | None
) -> httpx.Response:
    method, path, body = REQUESTS[route]
    headers = bearer(key) if key else {}
    return await client.request(method, path, json=body, headers=headers)


def test_every_guarded_route_is_exercised_here() -> None:
    assert REQUESTS.keys() == ROUTE_SCOPES.keys()


async def test_no_key_is_a_401_bearer_challenge(anonymous: httpx.AsyncClient) -> None:
    for route in ROUTE_SCOPES:
        response = await send(anonymous, route, None)
        assert response.status_code == 401, route
        assert response.headers["www-authenticate"] == 'Bearer realm="service"'
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 401


@pytest.mark.parametrize(
    "key",
    [
        "svc_0123456789abcdef_" + "A" * 43,  # well-formed, unknown
        "not-a-key",
        "svc_0123456789abcdef_" + "A" * 42,
    ],
)
async def test_an_invalid_key_is_a_401_invalid_token(
    anonymous: httpx.AsyncClient, key: str
) -> None:
    response = await anonymous.get("/items", headers=bearer(key))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="service", error="invalid_token"'


async def test_a_key_with_another_secret_is_refused(
    anonymous: httpx.AsyncClient, database_url: str
) -> None:
    key = await make_key(database_url)
    assert (await anonymous.get("/items", headers=bearer(key))).status_code == 200
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")  # same public id
    assert (await anonymous.get("/items", headers=bearer(forged))).status_code == 401


@pytest.mark.parametrize("route", list(ROUTE_SCOPES))
async def test_each_route_needs_exactly_its_scope(
    anonymous: httpx.AsyncClient, database_url: str, route: tuple[str, str]
) -> None:
    needed = ROUTE_SCOPES[route]
    others = [scope for scope in Scope if scope != needed]
    without = await send(anonymous, route, await make_key(database_url, "others", others))
    assert without.status_code == 403
    assert without.json()["detail"] == f"this API key lacks the scope {needed}"
    assert without.headers["www-authenticate"] == (
        f'Bearer realm="service", error="insufficient_scope", scope="{needed}"'
    )
    only = await send(anonymous, route, await make_key(database_url, "only", [needed]))
    assert only.status_code not in (401, 403), only.text


async def test_health_and_readiness_stay_open(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/readyz")).status_code == 200


async def test_head_on_health_and_readiness_is_open_and_answers_as_get(
    anonymous: httpx.AsyncClient,
) -> None:
    """Uptime monitors often use HEAD; the server sends no body (test_server.py)."""
    for path in ("/healthz", "/readyz"):
        got, head = await anonymous.get(path), await anonymous.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
    document = (await anonymous.get("/openapi.json")).json()
    assert document["paths"]["/healthz"].keys() == document["paths"]["/readyz"].keys() == {"get"}


async def test_public_reads_open_reads_only(database_url: str) -> None:
    settings = make_settings(database_url, public_reads=True)
    async with run_lifespan(create_app(settings)) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for route, scope in ROUTE_SCOPES.items():
                status = (await send(http, route, None)).status_code
                if scope in (Scope.ITEMS_READ, Scope.JOBS_READ):
                    assert status not in (401, 403), route
                else:
                    assert status == 401, route
            invalid = await http.get("/items", headers=bearer("not-a-key"))
            assert invalid.status_code == 401, "a key sent to a public read is still checked"
            document = (await http.get("/openapi.json")).json()
    assert document["paths"]["/items"]["get"]["security"] == [{}, {"apiKey": ["items:read"]}]
    assert document["paths"]["/items"]["post"]["security"] == [{"apiKey": ["items:write"]}]


async def test_openapi_declares_the_scheme_and_each_operations_scope(
    anonymous: httpx.AsyncClient,
) -> None:
    document = (await anonymous.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for (method, path), scope in ROUTE_SCOPES.items():
        assert document["paths"][path][method.lower()]["security"] == [{"apiKey": [scope]}]
    assert "security" not in document["paths"]["/healthz"]["get"]


async def test_only_the_digest_is_stored(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        _record, key = await KeyService(connection).create("stored", [Scope.ITEMS_READ])
        row = await connection.fetchrow("SELECT * FROM api_keys WHERE name = 'stored'")
    assert row is not None
    assert row["digest"] == digest(key)
    assert key not in json.dumps({k: str(v) for k, v in dict(row).items()})
    assert key.split("_")[1] == row["public_id"]
    assert len(key.split("_", 2)[2]) == 43  # 256 bits, base64url


async def test_the_key_never_appears_in_logs_its_name_does(
    json_log: io.StringIO, database_url: str, settings: Settings
) -> None:
    async with run_lifespan(create_app(settings)) as manager:
        key = await make_key(database_url, "logged")
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=bearer(key)
        ) as http:
            assert (await http.post("/items", json=ITEM)).status_code == 201
            assert (await http.get("/items/424242")).status_code == 404
            metrics = (await http.get("/metrics")).text
    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    access = [line for line in lines if line["logger"] == "service.access"]
    assert {(line["path"], line["api_key"]) for line in access} >= {
        ("/items", "logged"),
        ("/items/424242", "logged"),
    }
    secret = key.split("_", 2)[2]
    for leak in (key, secret, digest(key).hex(), digest(key).decode("latin-1")):
        assert leak not in text
    assert 'http_requests_by_api_key_total{api_key="logged",status="201"} 1.0' in metrics


async def test_one_clients_idempotency_key_never_replays_anothers_response(
    anonymous: httpx.AsyncClient, database_url: str
) -> None:
    first = bearer(await make_key(database_url, "first"))
    second = bearer(await make_key(database_url, "second"))
    keyed = {"Idempotency-Key": "shared-key"}
    created = await anonymous.post("/items", json=ITEM, headers=first | keyed)
    assert created.status_code == 201
    replay = await anonymous.post("/items", json=ITEM, headers=first | keyed)
    assert replay.headers["idempotent-replayed"] == "true"
    other = await anonymous.post("/items", json=ITEM, headers=second | keyed)
    assert other.status_code == 422
    assert other.json()["errors"][0]["type"] == "idempotency_key_reused"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_revoked_key_works_at_most_the_cache_bound_longer(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    clock = Clock()
    turns = Turns(pool, 2, Reachability(), 1.0)
    authenticator = Authenticator(turns, 1.0, cache_seconds=10, clock=clock)
    async with pool.acquire() as connection:
        keys = KeyService(connection)
        _, key = await keys.create("revoked", [Scope.ITEMS_READ])
        assert (await authenticator.authenticate(key)).name == "revoked"
        await keys.revoke("revoked")
        clock.now = 9.9
        assert (await authenticator.authenticate(key)).name == "revoked"  # cached
        clock.now = 10.1
        with pytest.raises(InvalidKey):
            await authenticator.authenticate(key)
        # Without a cache, revocation is immediate.
        _, key = await keys.create("uncached", [Scope.ITEMS_READ])
        uncached = Authenticator(turns, 1.0, cache_seconds=0, clock=clock)
        assert (await uncached.authenticate(key)).name == "uncached"
        await keys.revoke("uncached")
        with pytest.raises(InvalidKey):
            await uncached.authenticate(key)


async def test_an_expired_key_is_refused_even_when_cached(pool: asyncpg.Pool) -> None:
    authenticator = Authenticator(Turns(pool, 2, Reachability(), 1.0), 1.0, cache_seconds=60)
    async with pool.acquire() as connection:
        keys = KeyService(connection)
        _, key = await keys.create("short", [Scope.ITEMS_READ], timedelta(seconds=1))
        _, expired = await keys.create("late", [Scope.ITEMS_READ], timedelta(days=-1))
    assert (await authenticator.authenticate(key)).name == "short"  # now cached
    await asyncio.sleep(1.1)
    with pytest.raises(InvalidKey, match="expired"):
        await authenticator.authenticate(key)
    with pytest.raises(InvalidKey, match="expired"):
        await authenticator.authenticate(expired)


def test_a_guarded_route_without_a_scope_is_refused_at_start() -> None:
    router = APIRouter(dependencies=AUTHORIZED)

    @router.get("/unlisted")
    async def unlisted() -> None: ...

    with pytest.raises(LookupError, match="GET /unlisted has no scope"):
        check_route_scopes([router])


async def test_the_command_line_creates_lists_and_revokes(
    pool: asyncpg.Pool,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("APP_DATABASE_URL", settings.database_url)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    # cli.main runs its own event loop: in a thread, beside the test's.
    code, out, err = await asyncio.to_thread(
        run, "create", "--name", "ci", "--scope", "items:read", "--scope", "jobs:write"
    )
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("svc_")
    assert key not in err
    async with pool.acquire() as connection:
        stored = await connection.fetchrow("SELECT digest, scopes FROM api_keys WHERE name='ci'")
    assert stored is not None
    assert stored["digest"] == digest(key)
    assert stored["scopes"] == ["items:read", "jobs:write"]

    code, _, err = await asyncio.to_thread(run, "create", "--name", "ci", "--scope", "items:read")
    assert (code, err.strip()) == (1, "error: a key named 'ci' exists; revoke it first")
    code, out, _ = await asyncio.to_thread(run, "list")
    assert code == 0
    assert out.startswith("ci\titems:read,jobs:write\t")
    assert key not in out
    code, _, err = await asyncio.to_thread(run, "revoke", "ci")
    assert code == 0
    assert "revoked: ci" in err
    code, _, err = await asyncio.to_thread(run, "revoke", "ci")
    assert (code, err.strip()) == (1, "error: no live key named 'ci'")
    with pytest.raises(SystemExit) as bad:
        cli.main(["create", "--name", "Not A Name", "--scope", "items:read"])
    assert bad.value.code == 2
