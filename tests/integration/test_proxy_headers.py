"""The proxy chain: the app sees the real client, https and the public host; clients cannot
forge any of it; URLs the app generates point at the public https address."""

import uuid

import pytest

from stack_facts import eventually
from tests.integration.stack import Stack

SPOOFED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=6.6.6.6;proto=http;host=evil.example",
    "X-Real-IP": "6.6.6.6",
}


def caddy_seen_ip(stack: Stack, marker: str) -> str:
    """The client address in Caddy's access log for the request whose URI has `marker`.
    Caddy writes the line after the response, and Docker's log copier takes its time: wait."""
    seen: list[str] = []

    def logged() -> bool:
        for line in stack.logs(stack.container("proxy")):
            request = line.get("request")
            if isinstance(request, dict) and marker in str(request.get("uri", "")):
                seen.append(str(request["remote_ip"]))
                return True
        return False

    assert eventually(logged, timeout=10), f"no access log line for {marker}"
    return seen[0]


def proxy_addresses(stack: Stack) -> set[str]:
    proxy = stack.container("proxy")
    proxy.reload()
    return {net["IPAddress"] for net in proxy.attrs["NetworkSettings"]["Networks"].values()}


@pytest.mark.parametrize("headers", [{}, SPOOFED], ids=["plain", "spoofed"])
def test_app_sees_the_client_caddy_saw_over_https_and_the_public_host(
    stack: Stack, headers: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    with stack.client() as client:
        seen = client.get(f"/whoami?marker={marker}", headers=headers).json()
    client_ip = caddy_seen_ip(stack, marker)
    assert seen["client"] == client_ip
    assert seen["client"] not in proxy_addresses(stack), "the app saw Caddy, not the client"
    assert seen["scheme"] == "https"
    assert seen["host"] == f"localhost:{stack.https_port}"
    forwarded = seen["forwarding_headers"]
    assert forwarded["x-forwarded-for"] == client_ip, "a client-sent X-Forwarded-For survived"
    assert forwarded["x-forwarded-proto"] == "https"
    assert forwarded["x-forwarded-host"] == f"localhost:{stack.https_port}"
    assert "forwarded" not in forwarded
    assert "x-real-ip" not in forwarded


def test_generated_urls_are_https_on_the_public_host_and_port(stack: Stack) -> None:
    public = f"https://localhost:{stack.https_port}"
    with stack.client() as client:
        created = client.post("/items", json={"name": f"url-{uuid.uuid4().hex}", "price_cents": 1})
        assert created.status_code == 201
        assert created.headers["location"] == f"{public}/items/{created.json()['id']}"

        job = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 0}})
        assert job.headers["location"] == f"{public}/jobs/{job.json()['id']}"

        redirect = client.get("/items/", headers=SPOOFED)  # the app redirects to /items
        assert redirect.status_code == 307
        assert redirect.headers["location"] == f"{public}/items"

        assert client.get("/whoami", headers=SPOOFED).json()["url"] == f"{public}/whoami"
