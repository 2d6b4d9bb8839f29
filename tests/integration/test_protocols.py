"""Protocol negotiation at the edge: ALPN h1/h2, HTTP/3 over QUIC, Alt-Svc, TLS versions."""

import asyncio
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.h3 import h3_get
from tests.integration.stack import Stack
from tests.integration.tools import H2LOAD_COUNTS, Tools


def negotiate(stack: Stack, alpn: str) -> str | None:
    with stack.tls_connect(alpn, timeout=5) as tls:
        return tls.selected_alpn_protocol()


@pytest.mark.parametrize(
    ("alpn", "http2", "httpx_version", "client_protocol"),
    [("http/1.1", False, "HTTP/1.1", "HTTP/1.1"), ("h2", True, "HTTP/2", "HTTP/2.0")],
)
def test_alpn_and_the_version_the_app_reports(
    stack: Stack, alpn: str, http2: bool, httpx_version: str, client_protocol: str
) -> None:
    assert negotiate(stack, alpn) == alpn
    with stack.client(http2=http2) as client:
        response = client.get("/whoami")
    assert response.http_version == httpx_version
    assert response.json()["forwarding_headers"]["x-client-protocol"] == client_protocol


def advertised_h3_port(stack: Stack, http2: bool) -> int:
    with stack.client(http2=http2) as client:
        alt_svc = client.get("/healthz").headers["alt-svc"]
    match = re.search(r'h3=":(\d+)"', alt_svc)
    assert match, alt_svc
    return int(match.group(1))


def test_http3_end_to_end_on_the_advertised_port(stack: Stack) -> None:
    ports = {advertised_h3_port(stack, http2=False), advertised_h3_port(stack, http2=True)}
    assert ports == {stack.https_port}, "Alt-Svc must name the port that serves QUIC"
    (port,) = ports
    response = asyncio.run(h3_get(port, "/whoami", str(stack.ca_file)))
    assert response.alpn == "h3"
    assert response.status == 200
    seen = json.loads(response.body)
    assert seen["forwarding_headers"]["x-client-protocol"] == "HTTP/3.0"
    assert seen["scheme"] == "https"


# --- independent clients: curl (HTTP/3 through OpenSSL's QUIC) and h2load ---------------------
@pytest.fixture(scope="module")
def tools() -> Tools:
    return Tools.build()


def test_curl_gets_http3_only_on_the_advertised_port(stack: Stack, tools: Tools) -> None:
    port = advertised_h3_port(stack, http2=True)
    url = f"https://localhost:{port}/healthz"
    assert tools.curl(stack, "--http3-only", urls=[url]) == ["3"]


def test_curl_moves_from_http2_to_http3_through_alt_svc(stack: Stack, tools: Tools) -> None:
    """The first transfer learns Alt-Svc over HTTP/2, the second uses it: what browsers do."""
    url = f"{stack.base_url}/healthz"
    cache = ["--alt-svc", "/tmp/alt-svc.txt"]
    assert tools.curl(stack, *cache, urls=[url, url]) == ["2", "3"]


def test_curl_gets_http2_over_alpn(stack: Stack, tools: Tools) -> None:
    assert tools.curl(stack, "--http2", urls=[f"{stack.base_url}/healthz"]) == ["2"]


def test_h2load_burst_over_http2_fails_nothing(stack: Stack, tools: Tools) -> None:
    """A second, independent HTTP/2 client: 4 connections x 8 streams, reads of three paths.

    h2load cannot verify certificates; curl verifies the same port's chain in the tests above.
    """
    output = tools.h2load_reads(stack, requests=600, clients=4)
    assert "Application protocol: h2" in output, output
    counts = H2LOAD_COUNTS.search(output)
    assert counts, output
    assert counts.group("total", "done", "succeeded") == ("600", "600", "600"), output
    assert re.search(r"status codes: 600 2xx, 0 3xx, 0 4xx, 0 5xx", output), output


# --- TLS versions ----------------------------------------------------------------------------
def legacy_tls_context(version: ssl.TLSVersion, ca_file: str | None) -> ssl.SSLContext:
    """A client that really offers an old TLS version (OpenSSL's defaults would refuse to)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    if ca_file:
        context.load_verify_locations(ca_file)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def permissive_tls_server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A local TLS server that accepts TLS 1.0: proves the client above can speak it."""
    work: Path = tmp_path_factory.mktemp("tls")
    code, output = stack.exec(
        "proxy",
        "sh",
        "-c",
        "cat /data/caddy/certificates/local/localhost/localhost.crt "
        "/data/caddy/certificates/local/localhost/localhost.key",
    )
    assert code == 0, output
    (work / "pair.pem").write_text(output)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(work / "pair.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for _ in range(2):
            try:
                connection, _ = listener.accept()
                with context.wrap_socket(connection, server_side=True):
                    pass
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(timeout=10)


def handshake(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=str)
def test_old_tls_versions_are_refused(
    stack: Stack, permissive_tls_server: int, version: ssl.TLSVersion
) -> None:
    client = legacy_tls_context(version, None)
    assert handshake(permissive_tls_server, client) is not None, "the client cannot speak it"
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
        handshake(stack.https_port, client)


def test_tls13_is_accepted(stack: Stack) -> None:
    context = stack.ssl_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    assert handshake(stack.https_port, context) == "TLSv1.3"
