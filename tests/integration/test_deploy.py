"""scripts/deploy against a "staging" target (this machine's engine, its own project name and
loopback ports): commit A, then B under the shared mixed traffic, a broken C, a rollback, D,
which changes the Caddyfile, and E, which brings a migration."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import pytest

from stack_facts import eventually
from tests.integration.items import create, database_now, existing
from tests.integration.release import NEW_MIGRATION, Release
from tests.integration.tools import H2Bursts, Tools
from tests.integration.traffic import MixedTraffic

PROJECT = "service-deploytest"
REPOSITORY = "service-deploytest"
HEALTH_TIMEOUT = 40


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    work = tmp_path_factory.mktemp("deploy")
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
        "DEPLOY_LOCAL_ENGINE": "yes",  # this machine's engine is the target
    }
    prepared = Release.prepare(work, PROJECT, env)
    try:
        yield prepared
    finally:
        prepared.stack.run("down", "--volumes", check=False)
        prepared.remove_artifacts(REPOSITORY)


def test_status_before_the_first_deploy_says_nothing_is_deployed(release: Release) -> None:
    status = release.deploy("--status")
    assert status.returncode == 3, status
    assert f"nothing deployed: no {PROJECT} app and no deploy record" in status.stdout


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
    rolled = release.deploy_under_traffic(b)
    rolled.verify(a, b)
    # Both versions serve only while the new replicas are up and the old ones drain.
    started = rolled.started
    old = [o.at for o in rolled.traffic.outcomes if o.version == a and o.at > started]
    print(f"old version answered until {max(old, default=started) - started:.1f} s into the deploy")
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
    with MixedTraffic(release.stack) as traffic:
        result = release.deploy("--rollback")
        time.sleep(2)
    assert result.returncode == 0
    traffic.verify()
    assert release.version() == a
    with release.stack.client() as client:
        assert client.get(item.headers["location"]).status_code == 200


def test_a_new_caddyfile_is_loaded_into_the_running_edge(release: Release) -> None:
    """D changes caddy/: the deploy loads the new Caddyfile into the running Caddy (`caddy
    reload`: no connection is refused) instead of recreating the container, and a restart of
    that container keeps the new file.

    What a reload costs, and what is proven here. No 5xx: the deploy reloads only once Caddy
    has forgotten the replicas it stopped (a reload cancels the retries of the old config).
    HTTP/2 (curl, 8 streams per connection) loses nothing through the reload's graceful
    GOAWAY. Over HTTP/1.1, the old config's server closes its idle keep-alive connections at
    once (Go's Server.Shutdown), so a client sending on one just then gets no answer: reads
    and keyed writes are sent again, as HTTP lets a client do, and succeed; a bare write may
    not be: the few that go unanswered are printed, and the creates and deletes among them
    are proven never applied."""
    d = release.commits["D"]
    edge = release.stack.container("proxy")
    tools = Tools.build()
    reloading = MixedTraffic(release.stack, http2=False, resends=1)
    with reloading as traffic, H2Bursts(release.stack, tools) as h2:
        time.sleep(2)
        result = release.deploy("--commit", d)
        time.sleep(2)
    assert result.returncode == 0
    assert "loaded the Caddyfile" in result.stdout
    print(f"HTTP/2 (curl) through the edge reload: {h2.summary()}")
    traffic.verify(unanswered_bare_writes=True)
    assert h2.requests > 0
    assert h2.failed == 0
    assert release.version() == d
    assert release.stack.container("proxy").id == edge.id, "the edge was recreated"
    with release.stack.client() as client:
        assert client.get("/healthz").headers.get("x-edge-release") == "d"
    edge.restart(timeout=30)
    release.stack.wait_healthy(edge)
    with release.stack.client() as client:
        assert client.get("/healthz").headers.get("x-edge-release") == "d", "lost on restart"


def test_a_migration_blocked_by_a_long_transaction_fails_the_deploy_while_the_old_serve(
    release: Release,
) -> None:
    """E's migration (an ALTER TABLE on items) waits for the lock of a long transaction that
    reads items: it hits lock_timeout, E's replicas exit, the deploy fails at once and prints
    why, and the running version serves the 32 clients' traffic throughout. The attempt holds
    the requests on items for up to lock_timeout (they queue behind the ALTER's lock request):
    slower, never failed, and no retry is sent to a replica that refuses while it starts."""
    running = release.version()
    with MixedTraffic(release.stack) as traffic, long_transaction_on_items(release):
        time.sleep(2)
        result = release.deploy("--commit", release.commits["E"])
        time.sleep(2)
    assert result.returncode != 0
    assert "exited while starting" in result.stderr
    assert f"migration {NEW_MIGRATION} waited longer than lock_timeout" in result.stdout
    traffic.verify()
    slowest = max(outcome.seconds for outcome in traffic.outcomes)
    print(f"blocked migration: {traffic.summary()}; slowest answer {slowest:.1f} s")
    assert release.version() == running
    applied = f"SELECT count(*) FROM schema_migrations WHERE name = '{NEW_MIGRATION}'"
    assert release.stack.psql(applied) == "0"


@contextmanager
def long_transaction_on_items(release: Release) -> Iterator[None]:
    """A transaction that holds a read lock on items (a long report, say) until the end."""
    name = "long-transaction"
    holding = (
        "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) WHERE "
        f"application_name = '{name}' AND relation = 'items'::regclass AND granted"
    )
    end = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name='{name}'"
    sql = "BEGIN; LOCK TABLE items IN ACCESS SHARE MODE; SELECT pg_sleep(600); COMMIT"
    db = release.stack.container("db").name
    command = ["docker", "exec", "-e", f"PGAPPNAME={name}", db, "psql", "-U", "app", "-d", "app"]
    with subprocess.Popen([*command, "-c", sql], stdout=subprocess.DEVNULL) as session:
        try:
            assert eventually(lambda: release.stack.psql(holding) == "1", timeout=10)
            yield
        finally:
            release.stack.psql(end)
            session.wait(timeout=10)


def test_a_release_with_new_migrations_takes_a_restore_point_first(release: Release) -> None:
    e = release.commits["E"]
    before = backup_labels(release)
    result = release.deploy("--commit", e)
    assert result.returncode == 0
    assert f"brings migrations {NEW_MIGRATION}: taking a backup first" in result.stdout
    assert "restore point taken" in result.stdout
    assert len(backup_labels(release)) == len(before) + 1, "no new backup"
    assert release.version() == e
    applied = f"SELECT count(*) FROM schema_migrations WHERE name = '{NEW_MIGRATION}'"
    assert release.stack.psql(applied) == "1"
    # A release that brings nothing new takes no backup.
    again = release.deploy("--commit", e)
    assert again.returncode == 0
    assert "taking a backup first" not in again.stdout


def backup_labels(release: Release) -> list[str]:
    """The backups in the target's repository, by label."""
    code, output = release.stack.exec(
        "backup", "sh", "-c",
        "with-backup-key pgbackrest --stanza=main --output=json info | jq -r '.[0].backup[].label'",
    )  # fmt: skip
    assert code == 0, output
    return output.split()


def test_backup_status_and_a_restore_to_a_time_on_the_deploy_target(release: Release) -> None:
    """scripts/backup and scripts/restore with the deploy's env file, as on a staging host."""
    status = release.script("backup", "--status")
    assert status.returncode == 0
    assert "PROBLEM" not in status.stdout
    run = f"target-{uuid.uuid4().hex[:8]}"
    create(release.stack, [f"{run}-before-{n}" for n in range(10)])
    moment = database_now(release.stack)
    time.sleep(0.5)
    create(release.stack, [f"{run}-after-{n}" for n in range(10)])
    restored = release.script("restore", "--to", moment)
    assert restored.returncode == 0
    assert existing(release.stack, run) == {f"{run}-before-{n}" for n in range(10)}
    release.stack.wait_until_serving()
    assert release.version() == release.commits["E"]


def test_a_lost_data_volume_on_the_deploy_target_is_restored_with_the_deployed_images(
    release: Release,
) -> None:
    """The db container, the backup service and the data volume are gone; `--latest` recreates
    them from the images of the commit the target runs, restores, and starts the app."""
    run = f"lost-{uuid.uuid4().hex[:8]}"
    create(release.stack, [f"{run}-{n}" for n in range(10)])
    # A backup waits for its WAL to be archived: these rows are in the repository.
    assert release.script("backup").returncode == 0
    for service in ("db", "backup"):
        release.stack.container(service).remove(force=True)
    docker.from_env().volumes.get(f"{PROJECT}_db_data").remove()
    restored = release.script("restore", "--latest")
    assert restored.returncode == 0
    assert existing(release.stack, run) == {f"{run}-{n}" for n in range(10)}
    release.stack.wait_until_serving()
    assert release.version() == release.commits["E"]
    assert release.stack.container("backup").status == "running"
