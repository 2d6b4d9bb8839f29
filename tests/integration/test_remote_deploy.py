"""scripts/deploy to another Docker host over SSH, as README's runbook says (issue 15): a fresh
test host (tests/integration/hosts.py) with an engine and a `deploy` user in the docker group,
key-only, its host key checked; deploy/staging.env with the runbook's edits (DOCKER_HOST, the
site, TLS) and this module's ports. The first deploy creates the database password there and
ships the images; an update under the shared traffic; --status and --rollback; and a changed
host key or a host that is down fail the deploy before it touches anything."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from stack_facts import read_env_file
from tests.integration.hosts import DockerHost, DockerHosts
from tests.integration.release import Release
from tests.integration.traffic import MixedTraffic
from tests.project import ROOT

PROJECT = "service-remotetest"
REPOSITORY = "service-remotetest"
UNREACHABLE = "cannot reach the Docker engine at"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHosts]:
    started = time.monotonic()
    with DockerHosts(tmp_path_factory.mktemp("hosts"), count=1).running() as running:
        yield running
    print(f"\ntest_remote_deploy: {time.monotonic() - started:.0f} s with its test host")


@pytest.fixture(scope="module")
def host(hosts: DockerHosts) -> DockerHost:
    return hosts.hosts[0]


@pytest.fixture(scope="module")
def release(
    hosts: DockerHosts, host: DockerHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    env = {
        **read_env_file(ROOT / "deploy" / "staging.env"),
        # The runbook's step 3, for a site only this machine resolves.
        "DOCKER_HOST": host.url,
        "SITE_ADDRESS": "localhost",
        "TLS": "internal",
        # The test host's own ports, published on this machine's loopback.
        "HTTP_PORT": str(host.http_port),
        "HTTPS_PORT": str(host.https_port),
        "COMPOSE_PROJECT_NAME": PROJECT,
        "APP_IMAGE_REPOSITORY": REPOSITORY,
        "GRACEFUL_TIMEOUT": "15",
        "DEPLOY_HEALTH_TIMEOUT": "90",
    }
    work = tmp_path_factory.mktemp("remote")
    prepared = Release.prepare(work, PROJECT, env, engine=host.engine(), environ=hosts.environ())
    try:
        yield prepared
    finally:
        prepared.remove_artifacts(REPOSITORY)  # what the deploys built here


def test_the_first_deploy_to_a_fresh_host_creates_its_secret_there_and_ships_the_images(
    release: Release, host: DockerHost
) -> None:
    target = host.engine()
    assert target.containers.list(all=True) == []
    assert target.images.list() == []
    a = release.commits["A"]
    result = release.deploy("--commit", a)
    assert result.returncode == 0
    shipped = [f"{REPOSITORY}:{a}", f"{REPOSITORY}-proxy:", f"{REPOSITORY}-db:"]
    for image in shipped:
        assert f"sending {image}" in result.stdout
    assert result.stdout.count("(docker save | docker load)") == 3
    sizes = [docker.from_env().images.get(tag).attrs["Size"] for tag in loaded_tags(release)]
    print(f"shipped {len(sizes)} images, {sum(sizes) / 1e6:.0f} MB")
    release.stack.copy_ca()
    release.stack.wait_until_serving()
    assert release.version() == a
    # Served through the test host's ports, which are published on loopback only.
    bindings = host.container.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for published in bindings.values() for b in published} == {"127.0.0.1"}

    # The database password exists on the target only, in its secrets volume.
    code, password = release.stack.exec("db", "cat", "/run/secrets/db_password")
    assert code == 0
    assert len(password) == 40
    assert target.volumes.get(f"{PROJECT}_secrets")
    assert not docker.from_env().volumes.list(filters={"name": f"{PROJECT}_secrets"})
    assert not files_containing(release.clone, password.encode())
    assert password not in release.stack.env_file.read_text()


def loaded_tags(release: Release) -> list[str]:
    """The three images of the target's running containers, by tag."""
    return sorted(
        {
            str(c.attrs["Config"]["Image"])
            for s in ("app", "proxy", "db")
            for c in release.stack.containers(s)
        }
    )


def files_containing(directory: Path, secret: bytes) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file() and secret in path.read_bytes()]


def test_an_update_under_the_shared_traffic_fails_no_request(release: Release) -> None:
    a, b = release.commits["A"], release.commits["B"]
    rolled = release.deploy_under_traffic(b)
    rolled.verify(a, b)
    assert rolled.result.stdout.count("(docker save | docker load)") == 1, "the app's image only"


def test_status_and_rollback(release: Release) -> None:
    a, b = release.commits["A"], release.commits["B"]
    status = release.deploy("--status")
    assert status.returncode == 0
    assert f"{REPOSITORY}:{b} healthy" in status.stdout
    assert f"last deploy: succeeded {b}" in status.stdout
    with MixedTraffic(release.stack) as traffic:
        result = release.deploy("--rollback")
        time.sleep(2)
    assert result.returncode == 0
    assert "sending" not in result.stdout  # the host kept the previous images
    traffic.verify()
    assert release.version() == a


def target_state(host: DockerHost) -> list[tuple[str, str, str]]:
    """What runs and is stored on the host: containers (with their state) and images."""
    engine = host.engine()
    containers = [(c.id, c.status, c.image.id) for c in engine.containers.list(all=True)]
    images = [(i.id, "image", ",".join(sorted(i.tags))) for i in engine.images.list()]
    return sorted(containers + images)


def test_a_changed_host_key_fails_the_deploy_before_it_touches_anything(
    release: Release, hosts: DockerHosts, host: DockerHost
) -> None:
    d = release.commits["D"]
    before = target_state(host)
    host.rekey()
    try:
        result = release.deploy("--commit", d)
    finally:
        hosts.trust()
    assert result.returncode == 1
    assert f"{UNREACHABLE} {host.url}" in result.stderr
    assert "Host key verification failed" in result.stderr
    assert_nothing_done(result, d)
    assert target_state(host) == before
    assert release.deploy("--status").returncode == 0, "trusted again, the host answers"


def test_an_unreachable_host_fails_the_deploy_before_it_touches_anything(
    release: Release, host: DockerHost
) -> None:
    d = release.commits["D"]
    host.stop()
    started = time.monotonic()
    result = release.deploy("--commit", d)
    print(f"the deploy gave up on a stopped host after {time.monotonic() - started:.1f} s")
    assert result.returncode == 1
    assert f"{UNREACHABLE} {host.url}" in result.stderr
    assert "No route to host" in result.stderr or "Connection timed out" in result.stderr
    assert_nothing_done(result, d)


def assert_nothing_done(result: subprocess.CompletedProcess[str], commit: str) -> None:
    """Nothing built here, nothing sent: the deploy stopped at its first look at the target."""
    assert "building" not in result.stdout
    assert "sending" not in result.stdout
    assert not docker.from_env().images.list(name=f"{REPOSITORY}:{commit}")
