"""Tools for the bad-input and abuse tests: raw HTTP/1.1 over verified TLS, and what the app
and Postgres hold (pool connections, transactions) seen from inside the stack."""

import re
import ssl

from tests.integration.stack import Stack

# Not anchored to a line start: a response follows the previous body without a line break.
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")
# Reads the app's own /metrics inside each replica (the public site answers 404 for it).
READ_METRICS = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())"
)


def read_until_closed(connection: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout passes)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError, ssl.SSLError):
        pass
    return received


def exchange(stack: Stack, request: bytes, timeout: float = 10) -> bytes:
    """Sends raw bytes on a fresh connection; returns all bytes received back."""
    with stack.tls_connect(timeout=timeout) as connection:
        connection.sendall(request)
        return read_until_closed(connection)


def request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request that asks the server to close the connection after answering."""
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def with_key(stack: Stack, raw: bytes) -> bytes:
    """A raw request with the stack's API key after its first Host line, as an API client
    sends it (a request smuggled inside the bytes gets none)."""
    host = b"\r\nHost: localhost\r\n"
    assert host in raw, raw[:80]
    return raw.replace(host, host + f"Authorization: {stack.authorization}\r\n".encode(), 1)


def statuses(received: bytes) -> list[int]:
    return [int(code) for code in STATUS_LINE.findall(received)]


def body_of(received: bytes) -> bytes:
    return received.partition(b"\r\n\r\n")[2]


# --- inside the stack --------------------------------------------------------------------------
def app_metric(stack: Stack, name: str) -> list[float]:
    """One gauge's value from every app replica."""
    values = []
    for container in stack.containers("app"):
        result = container.exec_run(["python3", "-c", READ_METRICS])
        assert result.exit_code == 0, result.output.decode(errors="replace")
        match = re.search(rf"^{name} (\S+)$", result.output.decode(), re.MULTILINE)
        assert match, f"{name} missing from {container.name}'s /metrics"
        values.append(float(match.group(1)))
    return values


def app_connections(stack: Stack) -> dict[str, int]:
    """The app's connections to Postgres by state (idle, active, idle in transaction...)."""
    rows = stack.psql(
        "SELECT coalesce(state, '?') || '=' || count(*) FROM pg_stat_activity "
        "WHERE datname = 'app' AND pid <> pg_backend_pid() GROUP BY state"
    )
    pairs = (line.split("=") for line in rows.splitlines() if line)
    return {state: int(count) for state, count in pairs}


def app_connection_bound(stack: Stack) -> int:
    """The most connections to Postgres the replicas may hold: each pool, plus each LISTEN."""
    return sum(int(pool_max) + 1 for pool_max in app_metric(stack, "db_pool_max"))
