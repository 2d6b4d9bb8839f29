"""The stack under test: the bench's own compose project (compose.yaml + compose.bench.yaml), or
containers already running. Ports are read back from `docker compose config`, so the overlay
stays the one place they are set."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import docker

from stack_facts import CA_IN_PROXY, eventually, ps_filters

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENV = Path(__file__).with_name("bench.env")
BENCH_TARGET = "bench"  # the Dockerfile stage of the peer servers' image
# Caddy writes its internal CA on its first start, a moment after the container runs.
CA_TIMEOUT_SECONDS = 30
KEY_SCOPES = ("items:read", "items:write", "jobs:read", "jobs:write")  # every scenario's


def _run(
    command: list[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = os.environ | env if env else None
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=check, env=environment
    )


@dataclass
class Compose:
    project: str
    env_file: Path
    extra_files: list[Path] = field(default_factory=list)
    # Variables for the overlays that no env file holds (BASELINE_IMAGE); they win over it.
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> list[str]:
        files = [ROOT / "compose.yaml", ROOT / "compose.bench.yaml", *self.extra_files]
        args = ["docker", "compose", "-p", self.project, "--env-file", str(self.env_file)]
        return args + [arg for path in files for arg in ("-f", str(path))]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = _run([*self.command, *args], check=False, env=self.variables)
        if check and done.returncode:
            raise RuntimeError(f"docker compose {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self("config", "--format", "json").stdout)
        return config

    def published_ports(self) -> dict[str, int]:
        """service -> its published TCP port: HTTPS for a Caddy (HTTPS_PORT), else the app's."""
        ports: dict[str, int] = {}
        for name, service in self.config()["services"].items():
            tcp = [p for p in service.get("ports", []) if p.get("protocol", "tcp") == "tcp"]
            https = service.get("environment", {}).get("HTTPS_PORT")
            wanted = [p for p in tcp if str(p["target"]) == str(https)] if https else tcp
            if wanted:
                ports[name] = int(wanted[0]["published"])
        return ports

    def up(self, progress: "Progress", services: list[str]) -> None:
        """Builds every image, then starts `services` and what they depend on (all if empty)."""
        # Each image once; the bench image comes last, its stages then reuse the app's build
        # cache instead of building the same stages beside it.
        images: dict[str, str] = {}
        bench_images: dict[str, str] = {}
        for name, service in self.config()["services"].items():
            if "build" in service:
                bench = service["build"].get("target") == BENCH_TARGET
                (bench_images if bench else images).setdefault(service.get("image", name), name)
        progress.note(f"building images: {', '.join(images)}")
        self("build", *images.values())
        progress.note(f"building the bench image: {', '.join(bench_images)}")
        self("build", *bench_images.values())
        progress.note("starting the stack (compose up --wait)")
        self("up", "--detach", "--wait", "--no-build", "--quiet-pull", *services)

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)

    def create_key(self, name: str) -> str:
        """A new API key of every scope, made as README says: the command line inside the app
        container. It prints the key as its last line; the key is returned, never shown."""
        scopes = [arg for scope in KEY_SCOPES for arg in ("--scope", scope)]
        done = self(
            "exec", "-T", "app", "python", "-m", "service.keys", "create", "--name", name, *scopes
        )
        return done.stdout.strip().splitlines()[-1]

    def copy_ca(self, destination: Path) -> None:
        def copied() -> bool:
            return not self("cp", f"proxy:{CA_IN_PROXY}", str(destination), check=False).returncode

        if not eventually(copied, CA_TIMEOUT_SECONDS):
            raise RuntimeError("Caddy's internal root CA never appeared")


class Progress:
    """Live progress on stderr: one line per step, with the time elapsed."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def note(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {message}", flush=True, file=sys.stderr)


def project_containers(project: str) -> dict[str, str]:
    """container name -> id, for every running container of a compose project."""
    done = _run(["docker", "ps", *ps_filters(project), "--format", "{{.Names}} {{.ID}}"])
    return dict(line.split() for line in done.stdout.splitlines() if line.strip())


class CpuPinning:
    """--pin: the stack's containers on some CPUs, the generator on the others; undone on exit."""

    def __init__(self, containers: dict[str, str], stack_cpus: str) -> None:
        self.containers = containers
        self.stack_cpus = stack_cpus
        self.previous: dict[str, str] = {}

    def __enter__(self) -> "CpuPinning":
        for name, container in self.containers.items():
            inspect = _run(["docker", "inspect", "--format", "{{.HostConfig.CpusetCpus}}", name])
            self.previous[container] = inspect.stdout.strip()
            _run(["docker", "update", "--cpuset-cpus", self.stack_cpus, container])
        return self

    def __exit__(self, *exc: object) -> None:
        for container, cpus in self.previous.items():
            if cpus:
                _run(["docker", "update", "--cpuset-cpus", cpus, container], check=False)
            else:
                # No cpuset means every CPU: put every online CPU back.
                online = Path("/sys/devices/system/cpu/online").read_text().strip()
                _run(["docker", "update", "--cpuset-cpus", online, container], check=False)


def _usage(client: docker.APIClient, container: str) -> tuple[float, float, float]:
    """Cumulative CPU seconds, memory in MiB (as `docker stats` counts it), and when."""
    raw = client.stats(container, stream=False, one_shot=True)
    memory = raw.get("memory_stats", {})
    cache = memory.get("stats", {})
    inactive = cache.get("total_inactive_file", cache.get("inactive_file", 0))
    cpu = raw.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0) / 1e9
    return cpu, (memory.get("usage", 0) - inactive) / 2**20, time.monotonic()


class DockerStats:
    """Per-container CPU and memory over a measured run, from the Docker stats API: cumulative
    CPU time read before and after (exact, however short the run), memory at the end."""

    def __init__(self, containers: dict[str, str]) -> None:
        self.containers = containers
        self.client = docker.APIClient() if containers else None
        self.before: dict[str, tuple[float, float, float]] = {}
        self.after: dict[str, tuple[float, float, float]] = {}

    def _read_all(self) -> dict[str, tuple[float, float, float]]:
        client = self.client
        assert client is not None
        with ThreadPoolExecutor(max_workers=8) as pool:
            usages = pool.map(lambda c: _usage(client, c), self.containers.values())
        return dict(zip(self.containers, usages, strict=True))

    def __enter__(self) -> "DockerStats":
        if self.containers:
            self.before = self._read_all()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.containers and kind is None:
            self.after = self._read_all()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per container: CPU (% of one core), memory (MiB); idle ones (< 1 %) left out."""
        result = {}
        for name, (cpu_end, memory, end) in sorted(self.after.items()):
            cpu_start, _, start = self.before[name]
            cpu = 100 * (cpu_end - cpu_start) / (end - start)
            if cpu >= 1.0:
                result[name] = {"cpu_percent": round(cpu, 1), "memory_mib": round(memory, 1)}
        return result
