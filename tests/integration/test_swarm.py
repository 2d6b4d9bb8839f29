"""The same stack on Docker Swarm (a single-node swarm on loopback, left in teardown):
deploy through scripts/deploy, scale 2 -> 4 -> 2 and roll an update under steady traffic,
and a broken update that Swarm rolls back by itself."""

import subprocess
import time
from collections.abc import Iterator

import docker
import pytest

from stack_facts import eventually
from tests.integration.release import Release
from tests.integration.traffic import MixedTraffic

PROJECT = "service-swarmtest"
REPOSITORY = "service-swarmtest"


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def swarm_node() -> Iterator[str]:
    """This engine as a one-node swarm (only for this module, unless it already was one)."""
    engine = docker.from_env()
    joined_here = engine.info()["Swarm"]["LocalNodeState"] == "inactive"
    if joined_here:
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    node = str(engine.info()["Swarm"]["NodeID"])
    # compose.swarm.yaml pins Caddy to edge nodes and Postgres to the db node.
    run("docker", "node", "update", "--label-add", "edge=true", "--label-add", "db=true", node)
    try:
        yield node
    finally:
        run("docker", "node", "update", "--label-rm", "edge", "--label-rm", "db", node)
        if joined_here:
            run("docker", "swarm", "leave", "--force")


@pytest.fixture(scope="module")
def release(swarm_node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    env = {
        "DEPLOY_MODE": "swarm",
        "COMPOSE_PROJECT_NAME": PROJECT,
        "APP_IMAGE_REPOSITORY": REPOSITORY,
        "SITE_ADDRESS": "localhost",
        "TLS": "internal",
        "HTTP_PORT": "60080",
        "HTTPS_PORT": "60443",
        "APP_REPLICAS": "2",
        "GRACEFUL_TIMEOUT": "15",
        "DEPLOY_HEALTH_TIMEOUT": "90",
        "DEPLOY_LOCAL_ENGINE": "yes",  # this machine's engine is the swarm's manager
    }
    prepared = Release.prepare(tmp_path_factory.mktemp("swarm"), PROJECT, env)
    try:
        yield prepared
    finally:
        subprocess.run(["docker", "stack", "rm", PROJECT], capture_output=True, check=False)
        engine = docker.from_env()
        in_stack = {"label": f"com.docker.stack.namespace={PROJECT}"}
        eventually(
            lambda: (
                not engine.containers.list(all=True, filters=in_stack, ignore_removed=True)
                and not engine.networks.list(filters=in_stack)
            ),
            timeout=90,
            interval=1,
        )
        for secret in engine.secrets.list(filters={"name": PROJECT}):
            secret.remove()
        for volume in engine.volumes.list(
            filters={"label": f"com.docker.stack.namespace={PROJECT}"}
        ):
            volume.remove(force=True)
        prepared.remove_artifacts(REPOSITORY)


def test_status_before_the_first_deploy_says_nothing_is_deployed(release: Release) -> None:
    status = release.deploy("--status")
    assert status.returncode == 3, status
    assert "nothing deployed" in status.stdout


def test_deploy_as_a_swarm_stack(release: Release) -> None:
    result = release.deploy("--commit", release.commits["A"])
    assert result.returncode == 0
    release.stack.copy_ca()
    release.stack.wait_until_serving(timeout=120)
    assert release.version() == release.commits["A"]
    assert len(release.stack.containers("app")) == 2


def test_scale_out_and_back_under_traffic(release: Release) -> None:
    service = f"{PROJECT}_app"
    with MixedTraffic(release.stack) as traffic:
        for replicas in (4, 2):
            started = time.monotonic()
            run("docker", "service", "scale", "--detach=false", f"{service}={replicas}")
            print(f"scaled to {replicas} in {time.monotonic() - started:.0f} s")
            time.sleep(3)
            assert len(release.stack.containers("app")) == replicas
    traffic.verify()


def test_rolling_update_under_traffic(release: Release) -> None:
    b = release.commits["B"]
    with MixedTraffic(release.stack) as traffic:
        result = release.deploy("--commit", b)
        time.sleep(3)
    assert result.returncode == 0
    traffic.verify()
    assert release.version() == b


def test_broken_update_is_rolled_back_by_swarm(release: Release) -> None:
    b, c = release.commits["B"], release.commits["C"]
    result = release.deploy("--commit", c)
    assert result.returncode != 0
    assert "Swarm rolled the update back" in result.stderr
    assert release.version() == b
    status = release.deploy("--status")
    assert f"last deploy: failed {c}" in status.stdout
