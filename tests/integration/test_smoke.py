"""The stack as `docker compose up` gives it: healthy, TLS verified, closed where it must be."""

import socket

import docker
import httpx
import pytest

from tests.integration.stack import Stack


def test_every_service_is_healthy(stack: Stack) -> None:
    for service in ("proxy", "app", "db"):
        for container in stack.containers(service):
            container.reload()
            assert container.attrs["State"]["Health"]["Status"] == "healthy", container.name
    assert len(stack.containers("app")) == 2, "test.env scales the app to two replicas"


def test_healthz_over_http2_with_a_verified_certificate(stack: Stack) -> None:
    with stack.client(http2=True) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert response.json() == {"status": "ok", "version": "test"}


def test_readyz(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/readyz").json() == {"status": "ready"}


def test_certificate_is_rejected_without_the_internal_ca(stack: Stack) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.base_url}/healthz")


def test_http_redirects_to_https_on_the_public_port(stack: Stack) -> None:
    response = httpx.get(f"http://localhost:{stack.http_port}/items?limit=1")
    assert response.status_code == 308
    assert response.headers["location"] == f"https://localhost:{stack.https_port}/items?limit=1"


def test_app_runs_as_non_root(stack: Stack) -> None:
    for container in stack.containers("app"):
        code, output = container.exec_run(["id", "-u"])
        assert code == 0
        assert output.decode().strip() != "0"


def test_postgres_publishes_nothing_and_sits_on_an_internal_network(stack: Stack) -> None:
    db = stack.container("db")
    db.reload()
    published = {
        port: hosts for port, hosts in db.attrs["NetworkSettings"]["Ports"].items() if hosts
    }
    assert published == {}
    assert not db.attrs["HostConfig"]["PortBindings"]
    for name in db.attrs["NetworkSettings"]["Networks"]:
        assert docker.from_env().networks.get(name).attrs["Internal"] is True, name


def test_only_the_proxy_publishes_ports(stack: Stack) -> None:
    proxy = stack.container("proxy")
    proxy.reload()
    published = sorted(
        port for port, hosts in proxy.attrs["NetworkSettings"]["Ports"].items() if hosts
    )
    assert published == [
        f"{stack.http_port}/tcp",
        f"{stack.https_port}/tcp",
        f"{stack.https_port}/udp",
    ]
    for container in stack.containers("app"):
        container.reload()
        assert not any(container.attrs["NetworkSettings"]["Ports"].values())


def test_postgres_port_is_closed_on_the_host(stack: Stack) -> None:
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", 5432), timeout=2),
    ):
        pass
