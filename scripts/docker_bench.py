#!/usr/bin/env python3
"""The CIS Docker Benchmark's sections 4 (images) and 5 (container runtime), by Docker's own
docker-bench-security, against a running compose project; fails on any warning that
scripts/docker-bench.d/allowed-warnings.txt does not justify (SECURITY.md "Hardening").

    scripts/docker-bench [PROJECT] [JSON]

PROJECT is the compose project (default: "service", that of `docker compose up`); JSON, a file
for the report (every warning, its services, allowed or not, and why). Exit status: 0 when
every warning is allowed, 1 when one is not, 2 when the benchmark could not run.

The benchmark is vendored, pinned to a tag (docker-bench.d/VERSION), and its files are checked
against docker-bench.d/SHA256SUMS before it runs. It needs, on the host: bash, the docker CLI,
awk, grep, sed, stat, tail, tee, tr, wc, xargs and ss (iproute2) or netstat; run it as root, as
some checks read the engine's files. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack_facts import SERVICE_LABEL, ps_filters

BENCH_DIR = Path(__file__).resolve().parent / "docker-bench.d"
ALLOWED_FILE = BENCH_DIR / "allowed-warnings.txt"
SECTIONS = "container_images,container_runtime"
ANY = "*"  # an allow-list scope: every service, and checks of the host with no items


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Allowed:
    check: str
    scope: frozenset[str]  # services, or {ANY}
    reason: str

    def covers(self, services: set[str]) -> bool:
        return ANY in self.scope or (bool(services) and services <= self.scope)


def read_allowed(path: Path = ALLOWED_FILE) -> dict[str, Allowed]:
    """`ID SCOPE REASON` lines: a check id (5.2), `*` or services (proxy,app), why."""
    allowed: dict[str, Allowed] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            raise BenchError(f"{path}:{number}: expected ID SCOPE REASON")
        check, scope, reason = parts
        if check in allowed:
            raise BenchError(f"{path}:{number}: {check} is listed twice")
        allowed[check] = Allowed(check, frozenset(scope.split(",")), reason)
    return allowed


def verify_checksums(directory: Path = BENCH_DIR) -> None:
    """Every vendored file as pinned, and no file the sums do not name."""
    listed: set[str] = set()
    for line in (directory / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed.add(name)
        actual = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        if actual != digest:
            raise BenchError(f"{directory / name}: SHA-256 {actual}, pinned {digest}")
    ours = {"SHA256SUMS", "VERSION", ALLOWED_FILE.name}
    present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
    if unlisted := present - listed - ours:
        raise BenchError(f"files not in {directory}/SHA256SUMS: {sorted(unlisted)}")


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def project_containers(project: str) -> dict[str, tuple[str, str]]:
    """The project's running containers: name -> (service, image)."""
    ids = docker("ps", "-q", *ps_filters(project)).split()
    if not ids:
        raise BenchError(f"no running container of the compose project {project!r}")
    found = json.loads(docker("inspect", *ids))
    return {
        c["Name"].lstrip("/"): (
            c["Config"]["Labels"][SERVICE_LABEL],
            c["Config"]["Image"],
        )
        for c in found
    }


def include_pattern(containers: dict[str, tuple[str, str]]) -> str:
    """docker-bench's -i: an extended regex matched against each `docker ps` name and each
    `docker images` line (REPOSITORY TAG ...): exactly these containers and their images."""
    names = [f"^{name}$" for name in containers]
    images = set()
    for _, image in containers.values():
        repository, sep, tag = image.rpartition(":")
        if not sep or "/" in tag:  # no tag (a registry's port is not one)
            repository, tag = image, "latest"
        images.add(f"^{repository} +{tag} ".replace(".", r"\."))
    return "|".join(sorted(names) + sorted(images))


def run_bench(pattern: str) -> dict[str, Any]:
    """Runs the vendored benchmark in a scratch copy (it writes its log beside itself)."""
    with tempfile.TemporaryDirectory(prefix="docker-bench-") as scratch:
        work = Path(scratch) / "bench"
        shutil.copytree(BENCH_DIR, work)
        log = work / "log" / "docker-bench.log"
        command = ["bash", "docker-bench-security.sh", "-b", "-l", str(log), "-c", SECTIONS]
        done = subprocess.run(
            [*command, "-i", pattern],
            cwd=work,
            capture_output=True,
            text=True,
        )
        report = Path(f"{log}.json")
        if done.returncode != 0 or not report.exists():
            output = (done.stdout + done.stderr)[-2000:]
            raise BenchError(f"docker-bench-security failed ({done.returncode}): {output}")
        result: dict[str, Any] = json.loads(report.read_text())
        return result


def item_services(items: list[str], containers: dict[str, tuple[str, str]]) -> set[str]:
    """The services a warning names: items are container names (5.x, some as NAME:PORT) or
    images in brackets (4.x)."""
    services = set()
    for item in items:
        name = item.strip("[]")
        for container, (service, image) in containers.items():
            if name in (container, image) or name.startswith(f"{container}:"):
                services.add(service)
    return services


def judge(
    bench: dict[str, Any], containers: dict[str, tuple[str, str]], allowed: dict[str, Allowed]
) -> list[dict[str, Any]]:
    warnings = []
    for section in bench["tests"]:
        for result in section["results"]:
            if result["result"] != "WARN":
                continue
            services = item_services(result.get("items", []), containers)
            entry = allowed.get(result["id"])
            ok = entry is not None and entry.covers(services)
            warnings.append(
                {
                    "id": result["id"],
                    "desc": result["desc"],
                    "items": result.get("items", []),
                    "services": sorted(services),
                    "allowed": ok,
                    "reason": entry.reason if ok and entry else None,
                }
            )
    return warnings


def main(argv: list[str]) -> int:
    if len(argv) > 2 or any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0 if argv else 2
    project = argv[0] if argv else "service"
    try:
        verify_checksums()
        allowed = read_allowed()
        containers = project_containers(project)
        bench = run_bench(include_pattern(containers))
    except BenchError as error:
        print(f"docker-bench: {error}", file=sys.stderr)
        return 2
    warnings = judge(bench, containers, allowed)
    version = (BENCH_DIR / "VERSION").read_text().strip()
    for warning in warnings:
        verdict = "allowed" if warning["allowed"] else "NOT ALLOWED"
        services = ",".join(warning["services"]) or "host"
        print(f"WARN {warning['id']} [{services}] {verdict}: {warning['desc']}")
        if warning["allowed"]:
            print(f"     because {warning['reason']}")
    unexpected = [w["id"] for w in warnings if not w["allowed"]]
    print(
        f"docker-bench-security {version}: {bench['checks']} checks on {len(containers)}"
        f" containers of {project}; {len(warnings)} warnings, {len(unexpected)} not allowed"
    )
    if len(argv) == 2:
        report = {"version": version, "project": project, "checks": bench["checks"]}
        report |= {"containers": sorted(containers), "warnings": warnings}
        Path(argv[1]).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
