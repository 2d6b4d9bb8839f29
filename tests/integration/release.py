"""Releases to deploy in tests: a clone of this repository with three commits on top of what
is checked in, so that scripts/deploy builds exactly what a commit holds, as it does for real.

A is HEAD; B changes nothing but the commit (so the version /healthz reports); C breaks the
healthcheck; D is B with a Caddyfile that sends one more response header; E is D with a new
migration."""

import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import docker

from stack_facts import deploy_record_name
from tests.integration.stack import Stack
from tests.integration.traffic import MixedTraffic
from tests.project import ROOT

# D's edge adds this header to every response (inside the security_headers snippet).
EDGE_D_HEADER = "\t\t-Server\n\t\tX-Edge-Release d\n"
# E's migration: a nullable column, which the releases before it ignore.
NEW_MIGRATION = "9000_items_sku.sql"


def git(clone: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=clone, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_clone(work: Path) -> tuple[Path, dict[str, str]]:
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    git(clone, "config", "user.email", "test@example.com")
    git(clone, "config", "user.name", "test")
    commits = {"A": git(clone, "rev-parse", "--short=12", "HEAD")}
    git(clone, "commit", "--quiet", "--allow-empty", "-m", "B: a new version")
    commits["B"] = git(clone, "rev-parse", "--short=12", "HEAD")
    operations = clone / "service" / "api" / "operations.py"
    operations.write_text(
        operations.read_text().replace(
            "    return Health(version=runtime.settings.version)",
            '    raise ServiceUnavailable("this build is broken")',
        )
    )
    git(clone, "commit", "--quiet", "-am", "C: a build that fails its healthcheck")
    commits["C"] = git(clone, "rev-parse", "--short=12", "HEAD")
    git(clone, "checkout", "--quiet", "-b", "edge", commits["B"])
    caddyfile = clone / "caddy" / "Caddyfile"
    caddyfile.write_text(caddyfile.read_text().replace("\t\t-Server\n", EDGE_D_HEADER, 1))
    git(clone, "commit", "--quiet", "-am", "D: B with a changed Caddyfile")
    commits["D"] = git(clone, "rev-parse", "--short=12", "HEAD")
    (clone / "service" / "db" / "migrations" / NEW_MIGRATION).write_text(
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS sku text;\n"
    )
    git(clone, "add", ".")
    git(clone, "commit", "--quiet", "-m", "E: D with a new migration")
    commits["E"] = git(clone, "rev-parse", "--short=12", "HEAD")
    git(clone, "checkout", "--quiet", commits["B"])
    return clone, commits


@dataclass(frozen=True)
class RollOut:
    """A deploy of one commit under the shared traffic, and when it ran."""

    result: subprocess.CompletedProcess[str]
    traffic: MixedTraffic
    started: float
    finished: float

    def verify(self, old: str, new: str) -> None:
        """It succeeded, failed no request, and the new version took over from the old."""
        assert self.result.returncode == 0
        self.traffic.verify()
        assert self.traffic.versions(lambda at: at < self.started) == {old}
        assert self.traffic.versions(lambda at: at > self.finished) == {new}


@dataclass
class Release:
    clone: Path
    stack: Stack
    commits: dict[str, str]
    environ: Mapping[str, str] | None = None  # the scripts' environment (None: the tests')

    @classmethod
    def prepare(
        cls,
        work: Path,
        project: str,
        env: dict[str, str],
        engine: docker.DockerClient | None = None,
        environ: Mapping[str, str] | None = None,
        nodes: list[docker.DockerClient] | None = None,
    ) -> "Release":
        """`engine`: the target's, when it is not this machine's (tests/integration/hosts.py);
        `nodes`: a swarm's other nodes."""
        clone, commits = make_clone(work)
        stack = Stack(
            project,
            work,
            # Deployed under the shared traffic, one client far over any real limit: off, as
            # in test.env.
            env={**env, "APP_RATE_LIMITS": "false"},
            swarm=env.get("DEPLOY_MODE") == "swarm",
            engine=engine or docker.from_env(),
            nodes=nodes or [],
        )
        return cls(clone, stack, commits, environ)

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.script("deploy", *args)

    def deploy_under_traffic(self, commit: str) -> RollOut:
        with MixedTraffic(self.stack) as traffic:
            time.sleep(2)
            started = time.monotonic()
            result = self.deploy("--commit", commit)
            finished = time.monotonic()
            time.sleep(2)
        return RollOut(result, traffic, started, finished)

    def script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """scripts/NAME of the clone (deploy, backup, restore) on the target's env file."""
        started = time.monotonic()
        result = subprocess.run(
            [str(self.clone / "scripts" / name), str(self.stack.env_file), *args],
            cwd=self.clone,
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=900,
        )
        took = time.monotonic() - started
        print(f"{name} {' '.join(args)}: exit {result.returncode} in {took:.0f} s")
        print(result.stdout, result.stderr)
        return result

    def remove_artifacts(self, repository: str) -> None:
        """The deploy record and every image the deploys built or loaded."""
        engine = docker.from_env()
        name = deploy_record_name(self.stack.project)
        for container in engine.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
        for prefix in (repository, f"{repository}-proxy", f"{repository}-db"):
            for image in engine.images.list(name=prefix):
                # By tag: a build the cache made identical to another image (the db image of
                # a running stack) keeps that image.
                for tag in image.tags:
                    if tag.startswith(f"{prefix}:"):
                        engine.images.remove(tag, force=True)

    def version(self) -> str:
        with self.stack.client() as client:
            return str(client.get("/healthz").json()["version"])
