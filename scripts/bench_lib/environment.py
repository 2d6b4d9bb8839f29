"""What the figures were measured on: host, tools, the images' versions and the app's settings."""

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench_lib.loadgen import Tools
from bench_lib.stack import ROOT
from stack_facts import CA_IN_PROXY, config_env, ps_filters

_PACKAGES = ("hypercorn", "uvicorn", "granian", "fastapi", "starlette", "pydantic", "asyncpg")
_VERSIONS = (
    "import importlib.metadata as m, json, sys\n"
    "found = {}\n"
    "for name in sys.argv[1:]:\n"
    "    try: found[name] = m.version(name)\n"
    "    except m.PackageNotFoundError: pass\n"
    "print(json.dumps({'python': sys.version.split()[0], **found}))"
)
_SETTINGS = ("APP_DB_POOL_MAX_SIZE", "APP_JOB_WORKERS", "APP_LOG_LEVEL", "APP_VERSION")


def _output(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _container(container: str) -> dict[str, Any]:
    inspect = json.loads(_output("docker", "inspect", container) or "[{}]")[0]
    config, host = inspect.get("Config", {}), inspect.get("HostConfig", {})
    info: dict[str, Any] = {
        "image": config.get("Image"),
        "command": config.get("Cmd"),
        "cpus": (host.get("NanoCpus") or 0) / 1e9 or None,
        "memory_mib": (host.get("Memory") or 0) // 2**20 or None,
        "cpuset": host.get("CpusetCpus") or None,
    }
    env = config_env(config.get("Env"))
    info["settings"] = {key: env[key] for key in _SETTINGS if key in env}
    command = " ".join(config.get("Entrypoint") or []) + " " + " ".join(config.get("Cmd") or [])
    # Asked, not guessed from the command: the edge image runs caddy/run-edge.
    caddy = _output("docker", "exec", container, "caddy", "version")
    if caddy:
        info["caddy"] = caddy
    elif "postgres" in command:
        info["postgres"] = _output("docker", "exec", container, "postgres", "--version")
    else:
        versions = _output("docker", "exec", container, "python3", "-c", _VERSIONS, *_PACKAGES)
        info["packages"] = json.loads(versions or "{}")
    return info


def collect(tools: Tools, containers: dict[str, str]) -> dict[str, Any]:
    return {
        "host": {
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "os": _output("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
            "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20,
            "python": platform.python_version(),
        },
        "tools": tools.versions()
        | {
            "docker": _output("docker", "version", "--format", "{{.Server.Version}}"),
            "compose": _output("docker", "compose", "version", "--short"),
        },
        "git": {
            "commit": _output("git", "rev-parse", "HEAD"),
            "dirty": bool(_output("git", "status", "--porcelain")),
        },
        "containers": {name: _container(cid) for name, cid in sorted(containers.items())},
        # Anything else running competes for the same CPUs: say so next to the figures.
        "other_running_containers": sorted(
            set(_output("docker", "ps", "--format", "{{.Names}}").split()) - set(containers)
        ),
    }


def copy_ca_from_project(project: str, destination: Path) -> None:
    """--url with --project: Caddy's internal root from that project's proxy container."""
    proxies = [
        name
        for name in _output(
            "docker", "ps", *ps_filters(project, "proxy"), "--format", "{{.Names}}"
        ).splitlines()
        if name
    ]
    if not proxies:
        raise SystemExit(f"scripts/bench: project {project} has no running proxy container")
    done = subprocess.run(
        ["docker", "cp", f"{proxies[0]}:{CA_IN_PROXY}", str(destination)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"scripts/bench: cannot copy the CA: {done.stderr.strip()}")
