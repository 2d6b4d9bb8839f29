"""The real compose stack under test: started with testcontainers' DockerCompose from the
repository's own compose.yaml, with test values from an env file (never a second copy)."""

import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import docker
import httpx
import requests
from docker.models.containers import Container
from testcontainers.compose import DockerCompose

from service.models import Scope
from stack_facts import CA_IN_PROXY, compose_labels, eventually, health_of, read_env_file
from tests.project import ROOT

TEST_ENV = Path(__file__).with_name("test.env")
SCOPES = tuple(str(scope) for scope in Scope)


@dataclass
class Stack:
    project: str
    workdir: Path
    env: dict[str, str] = field(default_factory=lambda: read_env_file(TEST_ENV))
    overrides: dict[str, str] = field(default_factory=dict)  # on top of env, e.g. other ports
    # Overlays on compose.yaml (compose.observability.yaml, a test's own file), in order.
    overlays: tuple[str, ...] = ()
    swarm: bool = False  # deployed as a Swarm stack rather than a compose project
    # The engine it runs on, for the harness (another host's, tests/integration/hosts.py).
    engine: docker.DockerClient = field(default_factory=docker.from_env)
    # A swarm's other nodes, whose engines run tasks of the stack too.
    nodes: list[docker.DockerClient] = field(default_factory=list)
    compose: DockerCompose = field(init=False)
    _api_key: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.env = {**self.env, **self.overrides}
        self.env_file = self.workdir / f"{self.project}.env"
        self.env_file.write_text(
            "".join(f"{key}={value}\n" for key, value in self.env.items())
            + f"COMPOSE_PROJECT_NAME={self.project}\n"
        )
        self.compose = DockerCompose(
            ROOT,
            compose_file_name=["compose.yaml", *self.overlays],
            env_file=str(self.env_file),
            build=True,
        )
        self.ca_file = self.workdir / f"{self.project}-root.crt"

    # --- addresses ----------------------------------------------------------------------
    @property
    def https_port(self) -> int:
        return int(self.env["HTTPS_PORT"])

    @property
    def http_port(self) -> int:
        return int(self.env["HTTP_PORT"])

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        self.compose.start()
        self.copy_ca()
        self.wait_until_serving()
        self._api_key = self.create_key(f"tests-{os.urandom(4).hex()}")
        print(f"stack {self.project} up in {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        self.compose.stop(down=True)
        self._api_key = None  # its database is gone with the volumes

    @contextmanager
    def running(self) -> Iterator["Stack"]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def run(
        self, *args: str, check: bool = True, variables: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` for this project; `variables` override the env file's."""
        return subprocess.run(
            [*self.compose.compose_command_property, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=check,
            env={**os.environ, **(variables or {})},
        )

    def copy_ca(self) -> None:
        def copied() -> bool:
            proxies = self.containers("proxy")
            if not proxies:
                return False
            code, output = proxies[0].exec_run(["cat", CA_IN_PROXY])
            if code != 0:
                return False
            self.ca_file.write_bytes(output)
            return True

        if not eventually(copied, timeout=30):
            raise RuntimeError("Caddy's internal root CA never appeared")

    def wait_until_serving(self, timeout: float = 60) -> None:
        def ready() -> bool:
            try:
                with self.client(anonymous=True) as client:
                    return client.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        if not eventually(ready, timeout):
            raise RuntimeError(f"{self.base_url} did not become ready")

    # --- clients ------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        """Verifies against Caddy's internal root only (never verify=False)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def tls_connect(self, alpn: str = "http/1.1", timeout: float = 10) -> ssl.SSLSocket:
        """A raw TLS connection to Caddy, verified, offering one ALPN protocol."""
        context = self.ssl_context()
        context.set_alpn_protocols([alpn])
        raw = socket.create_connection(("127.0.0.1", self.https_port), timeout=timeout)
        return context.wrap_socket(raw, server_hostname="localhost")

    # --- API keys -----------------------------------------------------------------------
    def create_key(self, name: str, scopes: tuple[str, ...] = SCOPES) -> str:
        """A new API key, made as README says: the command line inside an app container."""
        command = ["python", "-m", "service.keys", "create", "--name", name]
        for scope in scopes:
            command += ["--scope", scope]
        result = self.container("app").exec_run(command, demux=True)
        out, err = (part.decode(errors="replace") if part else "" for part in result.output)
        assert result.exit_code == 0, f"key {name} not created: {err}"
        return out.strip().splitlines()[-1]

    @property
    def api_key(self) -> str:
        """This stack's key of every scope, the one its clients send (made at start, or on
        first use for a stack started otherwise, such as by scripts/deploy)."""
        if self._api_key is None:
            self._api_key = self.create_key(f"tests-{os.urandom(4).hex()}")
        return self._api_key

    @property
    def authorization(self) -> str:
        """The header's value, for clients that take raw headers (curl, h2load, sockets)."""
        return f"Bearer {self.api_key}"

    def _headers(self, anonymous: bool, options: dict[str, object]) -> dict[str, str]:
        headers: dict[str, str] = dict(options.pop("headers", None) or {})  # type: ignore[call-overload]
        if not anonymous:
            headers.setdefault("Authorization", self.authorization)
        return headers

    def client(
        self, http2: bool = False, anonymous: bool = False, **options: object
    ) -> httpx.Client:
        """A client of the edge, verifying its certificate, sending this stack's key (unless
        `anonymous`) as a user of the API would."""
        return httpx.Client(
            base_url=self.base_url,
            verify=self.ssl_context(),
            http2=http2,
            timeout=30,
            headers=self._headers(anonymous, options),
            **options,  # type: ignore[arg-type]
        )

    def async_client(
        self, http2: bool = False, anonymous: bool = False, **options: object
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            verify=self.ssl_context(),
            http2=http2,
            timeout=30,
            headers=self._headers(anonymous, options),
            **options,  # type: ignore[arg-type]
        )

    # --- containers ---------------------------------------------------------------------
    def containers(self, service: str) -> list[Container]:
        labels = (
            [f"com.docker.swarm.service.name={self.project}_{service}"]
            if self.swarm
            else compose_labels(self.project, service)
        )
        found = []
        for engine in (self.engine, *self.nodes):
            try:
                # Swarm removes replaced tasks' containers between the list and the inspect of
                # each.
                found += engine.containers.list(
                    all=not self.swarm, filters={"label": labels}, ignore_removed=True
                )
            except (docker.errors.DockerException, requests.ConnectionError):
                if engine is self.engine:
                    raise
                # A node that is down runs nothing; the swarm is still there.
        return sorted(found, key=lambda c: c.name)

    def container(self, service: str) -> Container:
        """The service's first container (app-1 when the app is scaled)."""
        return self.containers(service)[0]

    def exec(self, service: str, *command: str) -> tuple[int, str]:
        result = self.container(service).exec_run(list(command), demux=False)
        return result.exit_code, result.output.decode(errors="replace")

    def psql(self, sql: str) -> str:
        code, output = self.exec("db", "psql", "-U", "app", "-d", "app", "-tAc", sql)
        assert code == 0, output
        return output.strip()

    def logs(self, container: Container, since: datetime | None = None) -> list[dict[str, object]]:
        """The container's JSON log lines (others skipped), all or those written since then."""
        logs = container.logs(stdout=True, stderr=True, since=since)
        lines = logs.decode(errors="replace").splitlines()
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed

    def wait_healthy(self, container: Container, timeout: float = 90) -> None:
        def healthy() -> bool:
            container.reload()
            return health_of(container.attrs) == "healthy"

        if not eventually(healthy, timeout):
            raise RuntimeError(f"{container.name} did not become healthy")
