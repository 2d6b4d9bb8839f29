"""scripts/deploy against a "staging" target (this machine's engine, its own project name and
loopback ports): commit A, then B under steady traffic, a broken C, and a rollback.

The commits are made in a clone of this repository, so the deploy builds exactly what a
commit holds (git archive), as it does for real."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.integration.stack import ROOT, Stack
from tests.integration.traffic import SteadyTraffic

PROJECT = "service-deploytest"
REPOSITORY = "service-deploytest"
HEALTH_TIMEOUT = 40


@dataclass
class Release:
    clone: Path
    env_file: Path
    stack: Stack
    commits: dict[str, str]

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            [str(self.clone / "scripts" / "deploy"), str(self.env_file), *args],
            cwd=self.clone,
            capture_output=True,
            text=True,
            timeout=600,
        )
        took = time.monotonic() - started
        print(f"deploy {' '.join(args)}: exit {result.returncode} in {took:.0f} s")
        print(result.stdout, result.stderr)
        return result

    def version(self) -> str:
        with self.stack.client() as client:
            return str(client.get("/healthz").json()["version"])


def git(clone: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=clone, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    work = tmp_path_factory.mktemp("deploy")
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    git(clone, "config", "user.email", "test@example.com")
    git(clone, "config", "user.name", "test")
    commits = {"A": git(clone, "rev-parse", "--short=12", "HEAD")}
    git(clone, "commit", "--quiet", "--allow-empty", "-m", "B: a new version")
    commits["B"] = git(clone, "rev-parse", "--short=12", "HEAD")
    health = clone / "service" / "api" / "health.py"
    health.write_text(
        health.read_text().replace(
            "    return Health(version=runtime.settings.version)",
            '    raise ServiceUnavailable("this build is broken")',
        )
    )
    git(clone, "commit", "--quiet", "-am", "C: a build that fails its healthcheck")
    commits["C"] = git(clone, "rev-parse", "--short=12", "HEAD")
    git(clone, "checkout", "--quiet", commits["B"])

    env = {
        "COMPOSE_PROJECT_NAME": PROJECT,
        "APP_IMAGE_REPOSITORY": REPOSITORY,
        "SITE_ADDRESS": "localhost",
        "TLS": "internal",
        "PUBLISH_ADDRESS": "127.0.0.1",
        "HTTP_PORT": "58080",
        "HTTPS_PORT": "58443",
        "APP_REPLICAS": "2",
        "GRACEFUL_TIMEOUT": "15",
        "DEPLOY_HEALTH_TIMEOUT": str(HEALTH_TIMEOUT),
    }
    env_file = work / "staging-test.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    stack = Stack(PROJECT, work, env=env)
    try:
        yield Release(clone, env_file, stack, commits)
    finally:
        stack.run("down", "--volumes", check=False)
        engine = docker.from_env()
        for container in engine.containers.list(all=True, filters={"name": f"{PROJECT}-deploy"}):
            container.remove(force=True)
        for repository in (REPOSITORY, f"{REPOSITORY}-proxy"):
            for image in engine.images.list(name=repository):
                engine.images.remove(image.id, force=True)


def test_first_deploy(release: Release) -> None:
    result = release.deploy("--commit", release.commits["A"])
    assert result.returncode == 0
    release.stack.copy_ca()
    release.stack.wait_until_serving()
    assert release.version() == release.commits["A"]


def test_deploy_under_steady_traffic_fails_no_request_and_loses_no_job(release: Release) -> None:
    a, b = release.commits["A"], release.commits["B"]
    with release.stack.client() as client:
        job = client.post("/jobs", json={"kind": "sleep", "payload": {"seconds": 3}}).json()
    with SteadyTraffic(release.stack, "/healthz") as traffic:
        time.sleep(2)
        started = time.monotonic()
        result = release.deploy("--commit", b)
        finished = time.monotonic()
        time.sleep(2)
    print(f"deploy under traffic: {traffic.summary()}")
    assert result.returncode == 0
    assert traffic.failures == []
    before = {o.detail for o in traffic.outcomes if o.at < started}
    after = {o.detail for o in traffic.outcomes if o.at > finished}
    assert before == {a}
    assert after == {b}
    # Both versions serve only while the new replicas are up and the old ones drain.
    mixed = [o.at for o in traffic.outcomes if o.detail == a and o.at > started]
    print(
        f"old version answered until {max(mixed, default=started) - started:.1f} s into the deploy"
    )
    with release.stack.client() as client:
        finished_job = client.get(f"/jobs/{job['id']}", params={"wait": 30}).json()
    assert finished_job["state"] == "done"
    assert release.stack.psql("SELECT count(*) FROM jobs WHERE state <> 'done'") == "0"


def test_broken_build_leaves_the_running_version_serving(release: Release) -> None:
    b, c = release.commits["B"], release.commits["C"]
    started = time.monotonic()
    result = release.deploy("--commit", c)
    assert result.returncode != 0
    assert "not healthy within" in result.stderr
    assert time.monotonic() - started < HEALTH_TIMEOUT + 120
    assert release.version() == b
    assert len(release.stack.containers("app")) == 2, "the broken replicas were left behind"
    status = release.deploy("--status")
    assert status.returncode == 0
    assert f"last deploy: failed {c}" in status.stdout
    assert f"{REPOSITORY}:{b}" in status.stdout


def test_rollback_returns_to_the_previous_version_without_failures(release: Release) -> None:
    a = release.commits["A"]
    with release.stack.client() as client:
        item = client.post("/items", json={"name": f"r-{uuid.uuid4().hex}", "price_cents": 1})
    assert item.status_code == 201
    with SteadyTraffic(release.stack, "/healthz") as traffic:
        result = release.deploy("--rollback")
        time.sleep(2)
    print(f"rollback under traffic: {traffic.summary()}")
    assert result.returncode == 0
    assert traffic.failures == []
    assert release.version() == a
    with release.stack.client() as client:
        assert client.get(item.headers["location"]).status_code == 200
