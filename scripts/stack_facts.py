"""What scripts/deploy, scripts/backup, scripts/bench and the tests all know of this stack, said
once. Standard library only: scripts/deploy runs on a plain python3."""

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


class EnvFileError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """An env file as compose reads it: NAME=value lines, # comments, quotes around a value
    dropped. A line without `=` is an error that names it."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise EnvFileError(f"{path}:{number}: expected NAME=value")
        values[key.strip()] = value.strip().strip("'\"")
    return values


# Where Caddy's `tls internal` keeps its root certificate inside the proxy container (the
# official image's XDG_DATA_HOME is /data).
CA_IN_PROXY = "/data/caddy/pki/authorities/local/root.crt"
# The label compose puts on each container of a project naming its service (app, proxy, db).
SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"


def compose_labels(project: str, service: str | None = None) -> list[str]:
    """The labels of a compose project's containers (of one service, when given), as the
    `label` values of a docker filter."""
    labels = [f"{PROJECT_LABEL}={project}"]
    return [*labels, f"{SERVICE_LABEL}={service}"] if service else labels


def ps_filters(project: str, service: str | None = None) -> list[str]:
    """`docker ps` arguments that list a compose project's containers (of one service)."""
    return [
        arg for label in compose_labels(project, service) for arg in ("--filter", f"label={label}")
    ]


def config_env(entries: Iterable[object] | None) -> dict[str, str]:
    """An inspected container's or image's Config.Env (NAME=value strings) as a mapping."""
    pairs = (str(entry).partition("=") for entry in entries or [])
    return {name: value for name, _, value in pairs}


def health_of(container: Mapping[str, Any]) -> str:
    """An inspected container's health status ("" when it has no healthcheck)."""
    return str(container["State"].get("Health", {}).get("Status", ""))


def deploy_record_name(project: str) -> str:
    """The container whose labels are scripts/deploy's record of a project's last deploy."""
    return f"{project}-deploy-record"


def eventually(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Whether `check` held at some point within `timeout` seconds (it runs at least once)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
