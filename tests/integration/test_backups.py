"""Restore drills on the real stack (issue 14): pgBackRest's WAL archive and backups, and
`scripts/backup` / `scripts/restore` as an operator runs them.

One stack for the module, with its own project and ports, and a short archive_timeout so that
the loss drill measures seconds, not a minute. Each test leaves the stack serving."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from statistics import quantiles

import docker
import pytest

from stack_facts import eventually
from tests.integration.items import create, database_now, existing
from tests.integration.stack import Stack
from tests.integration.traffic import MixedTraffic
from tests.project import ROOT

ARCHIVE_TIMEOUT = 5
# What pgBackRest needs to push a closed WAL segment to the repository (asynchronously) after
# Postgres closes it: measured ~0.3 s here; the loss bound allows this much on top of
# archive_timeout.
PUSH_SECONDS = 2


@pytest.fixture(scope="module")
def stack(stack_workdir: Path) -> Iterator[Stack]:
    overrides = {
        "HTTP_PORT": "62080",
        "HTTPS_PORT": "62443",
        "DB_ARCHIVE_TIMEOUT": str(ARCHIVE_TIMEOUT),
    }
    with Stack("service-backups", stack_workdir, overrides=overrides).running() as running:
        yield running


def first_backup_taken(stack: Stack) -> bool:
    return backups_script(stack, "backup", "--status").returncode == 0


def backups_script(stack: Stack, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/backup or scripts/restore on the module's stack, as an operator runs them."""
    done = subprocess.run(
        [str(ROOT / "scripts" / name), "--env-file", str(stack.env_file), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(f"$ scripts/{name} {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def test_the_backup_service_takes_the_first_full_backup_by_itself(stack: Stack) -> None:
    assert eventually(lambda: first_backup_taken(stack), timeout=120, interval=5), (
        "no backup, or --status failing"
    )
    status = backups_script(stack, "backup", "--status")
    assert "full backup:" in status.stdout
    assert "PROBLEM" not in status.stdout
    # ...and the app's metrics show it (the backup service mirrors the repository's backups
    # into the database; the app reads them every stats_interval).
    newest_full = 'backup_last_success_timestamp_seconds{type="full"}'
    assert eventually(lambda: newest_full in metrics(stack), timeout=60, interval=2)
    assert "postgres_wal_last_archived_timestamp_seconds 0.0" not in metrics(stack)


def test_status_fails_once_the_newest_backup_is_older_than_the_policy_allows(
    stack: Stack,
) -> None:
    """`--status` reads the policy from the backup service: here differential backups due every
    2 s, in a container created but not started, so that it takes none while the newest backup
    ages past 1.5 x 2 s."""
    policy = {"BACKUP_DIFF_EVERY": "2s"}
    stack.run("up", "--no-start", "--no-deps", "--force-recreate", "backup", variables=policy)
    try:
        time.sleep(4)
        stale = backups_script(stack, "backup", "--status")
    finally:
        stack.run("up", "--detach", "--no-deps", "--force-recreate", "backup")
    assert stale.returncode == 1
    assert "PROBLEM: the newest backup is" in stale.stdout
    assert "(allowed: 3 s = 1.5 x BACKUP_DIFF_EVERY)" in stale.stdout
    assert backups_script(stack, "backup", "--status").returncode == 0


def metrics(stack: Stack) -> str:
    """The app's /metrics, read inside its container (the edge never routes there)."""
    code, text = stack.exec(
        "app", "python3", "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode())",
    )  # fmt: skip
    assert code == 0, text
    return text


def test_a_restore_to_a_time_brings_back_exactly_what_was_committed_before_it(
    stack: Stack,
) -> None:
    run = f"pitr-{uuid.uuid4().hex[:8]}"
    create(stack, [f"{run}-before-backup-{n}" for n in range(20)])
    assert backups_script(stack, "backup", "--full").returncode == 0
    create(stack, [f"{run}-after-backup-{n}" for n in range(20)])
    target = database_now(stack)
    time.sleep(0.5)
    create(stack, [f"{run}-after-target-{n}" for n in range(20)])

    started = time.monotonic()
    restored = backups_script(stack, "restore", "--to", target)
    print(f"restore to {target}: {time.monotonic() - started:.1f} s")
    assert restored.returncode == 0

    assert existing(stack, run) == {
        f"{run}-{when}-{n}" for when in ("before-backup", "after-backup") for n in range(20)
    }
    stack.wait_until_serving()
    kept = stack.psql(f"SELECT id FROM items WHERE name = '{run}-after-backup-19'")
    with stack.client() as client:
        assert client.get(f"/items/{kept}").json()["name"] == f"{run}-after-backup-19"
        created = client.post("/items", json={"name": f"{run}-new", "price_cents": 1})
        assert created.status_code == 201


def test_a_backup_under_write_traffic_fails_no_request(stack: Stack) -> None:
    with MixedTraffic(stack) as traffic:
        time.sleep(3)
        backup_started = time.monotonic()
        taken = backups_script(stack, "backup", "--full")
        backup_ended = time.monotonic()
        time.sleep(2)
    assert taken.returncode == 0
    during = [o.seconds for o in traffic.outcomes if backup_started <= o.at <= backup_ended]
    before = [o.seconds for o in traffic.outcomes if o.at < backup_started]
    p99_during, p99_before = (quantiles(values, n=100)[98] * 1000 for values in (during, before))
    print(
        f"full backup under traffic: {backup_ended - backup_started:.1f} s, {len(during)} "
        f"requests meanwhile, p99 {p99_during:.0f} ms (before: {p99_before:.0f} ms)"
    )
    traffic.verify()


def test_a_lost_data_volume_is_restored_with_all_but_the_last_seconds(stack: Stack) -> None:
    engine = docker.from_env()
    with MixedTraffic(stack) as traffic:
        time.sleep(8)
        # The disaster: the data volume is gone, and the containers that used it.
        for service in ("db", "backup"):
            stack.container(service).remove(force=True)
        lost_at = time.monotonic()
        engine.volumes.get(f"{stack.project}_db_data").remove()
        time.sleep(1)
    print(f"before the loss: {traffic.summary()}")

    started = time.monotonic()
    restored = backups_script(stack, "restore", "--latest")
    print(f"restore of a lost volume: {time.monotonic() - started:.1f} s")
    assert restored.returncode == 0
    stack.wait_until_serving()

    present = existing(stack, f"traffic-{traffic.run_id}-")
    acknowledged = {name: at for name, at in traffic.created.items() if at < lost_at}
    # Deleted names are absent by right (or present again, when their delete was lost).
    gone = present | traffic.deleted
    missing = {name: lost_at - at for name, at in acknowledged.items() if name not in gone}
    window = max(missing.values(), default=0.0)
    print(f"{len(acknowledged)} creates acknowledged before the loss, {len(missing)} missing; "
          f"the oldest missing was acknowledged {window:.1f} s before the loss "
          f"(archive_timeout {ARCHIVE_TIMEOUT} s)")  # fmt: skip
    assert len(acknowledged) > 100, "too little write traffic to measure a loss"
    assert window <= ARCHIVE_TIMEOUT + PUSH_SECONDS, "lost work older than archive_timeout"
    # Nothing comes back that no client was told about (deleted names may come back only
    # when their delete was among the lost work).
    assert present <= traffic.created.keys()


def test_a_missing_or_corrupt_backup_fails_the_restore_and_changes_nothing(stack: Stack) -> None:
    run = f"intact-{uuid.uuid4().hex[:8]}"
    create(stack, [f"{run}-{n}" for n in range(5)])
    db = stack.container("db")
    started_at = db.attrs["State"]["StartedAt"]

    too_early = backups_script(stack, "restore", "--to", "2000-01-01 00:00:00+00")
    assert too_early.returncode == 1
    assert "no backup finished before 2000-01-01" in too_early.stderr
    assert "nothing was changed" in too_early.stderr

    bundle = "ls -d /r/backup/main/*F | tail -1"
    corrupt = (
        f'b="$({bundle})/bundle/1"; cp "$b" /r/.saved-bundle; '
        'printf garbage | dd of="$b" bs=1 seek=1000 conv=notrunc 2>/dev/null'
    )
    repair = f'b="$({bundle})/bundle/1"; mv /r/.saved-bundle "$b"'
    in_repository = {f"{stack.project}_backups": {"bind": "/r", "mode": "rw"}}
    engine = docker.from_env()
    engine.containers.run("debian:trixie-slim", ["sh", "-c", corrupt], volumes=in_repository,
                          remove=True)  # fmt: skip
    try:
        corrupted = backups_script(stack, "restore", "--latest")
    finally:
        engine.containers.run("debian:trixie-slim", ["sh", "-c", repair], volumes=in_repository,
                              remove=True)  # fmt: skip
    assert corrupted.returncode == 1
    assert "failed verification" in corrupted.stderr
    assert "invalid" in corrupted.stderr
    assert "nothing was changed" in corrupted.stderr

    db.reload()
    assert db.attrs["State"]["StartedAt"] == started_at, "Postgres was restarted"
    assert existing(stack, run) == {f"{run}-{n}" for n in range(5)}
    with stack.client() as client:
        assert client.get("/readyz").status_code == 200
