"""Hardening that is real: non-root, read-only, closed admin and database, headers everywhere."""

import socket

import httpx
import pytest

from tests.integration.stack import Stack
from tests.project import render_compose

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
    # Nothing may load or frame anything: the API serves no page but the docs.
    "content-security-policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}
# The docs page and its files: exactly what Swagger UI needs (tests/integration/test_docs_page).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, name)
    assert "server" not in response.headers, response.status_code


def test_app_is_non_root_with_a_read_only_root_filesystem(stack: Stack) -> None:
    for container in stack.containers("app"):
        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert uid != "0"
        code, output = container.exec_run(["touch", "/app/written"])
        assert code != 0
        assert "Read-only file system" in output.decode()
        assert container.exec_run(["touch", "/tmp/scratch"]).exit_code == 0
        container.reload()
        host_config = container.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] is True
        assert host_config["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host_config["SecurityOpt"]


# The user each long-running service's processes run as (caddy/Dockerfile, Dockerfile,
# postgres/Dockerfile; the backup service runs the db image).
USERS = {"proxy": "10002", "app": "10001", "db": "999", "backup": "999"}


def test_no_process_of_any_service_runs_as_root(stack: Stack) -> None:
    for service, uid in USERS.items():
        for container in stack.containers(service):
            # As the host sees them (no user namespaces): every process, PID 1 and its children.
            processes = container.top(ps_args="-o pid,uid,comm")["Processes"]
            assert processes, container.name
            assert {row[1] for row in processes} == {uid}, (container.name, processes)
            container.reload()
            assert container.attrs["Config"]["User"] not in ("", "0", "root"), container.name


def test_the_non_root_edge_binds_privileged_ports(stack: Stack) -> None:
    """Production binds 80 and 443 (the tests publish high ports): a second Caddy in the edge
    container, as its user and with its capabilities, serves on port 80."""
    probe = (
        "caddy respond --listen 127.0.0.1:80 bound >/dev/null 2>&1 & pid=$!; "
        "for _ in 1 2 3 4 5 6 7 8 9 10; do "
        "wget -qO- http://127.0.0.1:80/ && break; sleep 0.3; done; "
        "kill $pid"
    )
    code, output = stack.exec("proxy", "sh", "-c", probe)
    assert output.startswith("bound"), (code, output)


def test_db_and_backup_have_read_only_root_filesystems(stack: Stack) -> None:
    for service in ("db", "backup"):
        for container in stack.containers(service):
            container.reload()
            assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True, container.name
            code, output = container.exec_run(["touch", "/var/lib/postgresql/written"])
            assert code != 0
            assert "Read-only file system" in output.decode()
            # What pgBackRest writes: its locks, and (db) the archive-push spool.
            assert container.exec_run(["touch", "/tmp/pgbackrest/scratch"]).exit_code == 0
    db = stack.container("db")
    assert db.exec_run(["touch", "/var/spool/pgbackrest/scratch"]).exit_code == 0
    assert stack.psql("SELECT 1") == "1"


def test_every_service_has_pids_and_cpu_limits(stack: Stack) -> None:
    """The limits compose.yaml sets are the ones the engine enforces, and every service has
    them (docker-bench 5.12 and 5.29)."""
    config = render_compose("compose.yaml", env_file=stack.env_file)["services"]
    for service in ("proxy", "app", "db", "backup"):
        limits = config[service]["deploy"]["resources"]["limits"]
        assert int(limits["pids"]) > 0, service
        assert float(limits["cpus"]) > 0, service
        for container in stack.containers(service):
            container.reload()
            host_config = container.attrs["HostConfig"]
            assert host_config["PidsLimit"] == int(limits["pids"]), container.name
            assert host_config["NanoCpus"] == int(float(limits["cpus"]) * 1e9), container.name
    assert int(config["secrets"]["deploy"]["resources"]["limits"]["pids"]) > 0


def test_caddy_admin_api_is_closed_from_the_host_and_the_network(stack: Stack) -> None:
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", 2019), 2):
        pass
    probe = (
        "import socket, urllib.request\n"
        "try:\n"
        "    socket.create_connection(('proxy', 2019), 2); print('admin open')\n"
        "except OSError:\n"
        "    print('admin closed')\n"
        "body = urllib.request.urlopen('http://proxy:9180/metrics', timeout=5).read()\n"
        "print('metrics', b'caddy_http_requests_total' in body or b'caddy_' in body)\n"
    )
    code, output = stack.exec("app", "python3", "-c", probe)
    assert code == 0, output
    assert "admin closed" in output
    assert "metrics True" in output, "Caddy's metrics should be readable inside the network"


def test_metrics_are_not_public(stack: Stack) -> None:
    with stack.client() as client:
        for path in ("/metrics", "/metrics/"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
            assert "http_requests_total" not in response.text


def test_security_headers_on_every_response(stack: Stack) -> None:
    with stack.client(http2=True) as client:
        responses = [
            client.get("/healthz"),  # 200 from the app
            client.get("/no-such-page"),  # 404 from the app
            client.get("/metrics"),  # 404 from Caddy
            client.post("/items", json={}),  # 422
            client.delete("/healthz"),  # 405 (HEAD is served, as GET)
        ]
    # httpx's HTTP/2 client sends a whole body before reading: Caddy stops reading at the
    # limit, so that client would stall on flow control. curl over h2 gets the 413.
    with stack.client() as client:
        responses.append(client.post("/items", content=b"x" * (2 * 1024 * 1024)))  # Caddy
    assert [r.status_code for r in responses] == [200, 404, 404, 422, 405, 413]
    assert responses[-1].json() == {
        "type": "about:blank",
        "title": "Request Entity Too Large",
        "status": 413,
    }
    for response in responses:
        assert_security_headers(response)


def test_http_port_answers_only_with_a_redirect(stack: Stack) -> None:
    response = httpx.post(f"http://localhost:{stack.http_port}/items", json={})
    assert response.status_code == 308
    assert response.headers["location"] == f"{stack.base_url}/items"
    assert_security_headers(response)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_other_hosts_get_a_404_with_the_same_headers(stack: Stack, scheme: str) -> None:
    """A Host the edge does not serve, on either port: never Caddy's bare empty 200."""
    port = stack.https_port if scheme == "https" else stack.http_port
    with httpx.Client(verify=stack.ssl_context()) as client:
        response = client.get(
            f"{scheme}://localhost:{port}/items", headers={"Host": "other.example"}
        )
    assert response.status_code == 404
    assert response.json() == {"type": "about:blank", "title": "Not Found", "status": 404}
    assert_security_headers(response)


def test_only_the_docs_page_may_load_scripts_and_styles(stack: Stack) -> None:
    with stack.client() as client:
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/docs.js"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == DOCS_CSP, path
        for path in ("/openapi.json", "/docsx", "/items/docs"):
            response = client.get(path)
            assert_security_headers(response)
