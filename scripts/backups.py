#!/usr/bin/env python3
"""Backups and restores of the stack's database with pgBackRest (README "Backups and restore").

    scripts/backup [ENV] [--full | --diff]    take a backup now (default: incremental)
    scripts/backup [ENV] --status             backups, their sizes and ages, the WAL archive;
                                              exits 1 when the newest backup is too old or
                                              archiving fails
    scripts/restore [ENV] --latest            the database as of the last archived WAL
    scripts/restore [ENV] --to TIMESTAMP      the database as it was at TIMESTAMP

ENV is an env file of scripts/deploy (deploy/ENV.env, or a path): the target's engine
(DOCKER_HOST or DOCKER_CONTEXT) and its project. Without it: the local stack of
`docker compose up`, its variables from --env-file (default .env; the project "service" unless
it names another).

A restore checks the repository first (a backup that finished before the target exists, and
`pgbackrest verify` passes) and changes nothing when it does not. It then stops the app and the
backup service, has the current WAL archived (if Postgres runs), stops Postgres, restores into
the data volume (pgBackRest writes pg_control last: an interrupted restore cannot start),
starts Postgres, which replays the archive up to the target and is promoted, and starts the app
only once the database accepts writes. Standard library only; Swarm targets are not supported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_lib.images import Images
from deploy_lib.restore_point import STANZA, backup_now
from deploy_lib.target import APP, COMPOSE_FILES, ROOT, DeployError, Target
from stack_facts import EnvFileError, config_env, eventually, ps_filters, read_env_file

DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# `--status` fails when the newest backup is older than this many BACKUP_DIFF_EVERY: one turn
# may run late (a long backup, a restart), two may not.
STALE_AFTER_TURNS = 1.5
RECOVERY_TIMEOUT_SECONDS = 600


class BackupError(DeployError):
    pass


def say(message: str) -> None:
    print(f"[backups] {message}", flush=True)


def seconds(duration: str) -> float:
    """A duration as backup-scheduler reads it: 90s, 30m, 6h, 7d, or plain seconds."""
    unit = DURATION_UNITS.get(duration[-1:], 1)
    number = duration[:-1] if duration[-1:] in DURATION_UNITS else duration
    return float(number) * unit


def readable(duration: float) -> str:
    """A duration in the unit that suits it: 3 s, 25 min, 5.2 h, 8.0 d."""
    if duration < 120:
        return f"{duration:.0f} s"
    if duration < 7200:
        return f"{duration / 60:.0f} min"
    if duration < 2 * 86400:
        return f"{duration / 3600:.1f} h"
    return f"{duration / 86400:.1f} d"


@dataclass
class Stack:
    """The compose project that holds the database, on its engine."""

    project: str
    target: Target | None  # None: the local stack
    env_file: Path | None  # the local stack's compose variables
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, environment: str | None, env_file: Path) -> Stack:
        if environment:
            try:
                target = Target.load(environment)
            except DeployError as error:
                raise BackupError(str(error)) from None
            if target.swarm:
                raise BackupError("Swarm targets are not supported (README: Backups and restore)")
            return cls(target.project, target, target.env_file, target.docker_env())
        try:
            settings = read_env_file(env_file) if env_file.is_file() else {}
        except EnvFileError as error:
            raise BackupError(str(error)) from None
        project = settings.get("COMPOSE_PROJECT_NAME", "service")
        return cls(project, None, env_file if env_file.is_file() else None)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.env or None
        result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True)
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise BackupError(f"docker {' '.join(args[:4])}: {output[-3000:]}")
        return result

    def containers(self, service: str) -> list[dict[str, Any]]:
        """The service's containers, running or not."""
        listed = self.docker("ps", "--all", "--quiet", *ps_filters(self.project, service))
        ids = listed.stdout.split()
        if not ids:
            return []
        found: list[dict[str, Any]] = json.loads(self.docker("inspect", *ids).stdout)
        return found

    def container(self, service: str) -> dict[str, Any]:
        found = self.containers(service)
        if not found:
            raise BackupError(f"project {self.project} has no {service} container")
        return found[0]

    def compose_create(self, service: str) -> None:
        """Creates the service's container (and a missing volume) without starting it."""
        files = COMPOSE_FILES if self.target else ("compose.yaml",)
        command = ["docker", "compose", "--project-name", self.project]
        env = dict(self.env or os.environ)
        if self.env_file:
            command += ["--env-file", str(self.env_file)]
        if self.target:
            # The images of what the target runs: those of the deployed app's commit.
            app = self.container(APP)
            commit = self.target.commit_of(str(app["Config"]["Image"]))
            env.update(Images.of(self.target, commit).environment())
        command += [arg for name in files for arg in ("-f", str(ROOT / name))]
        command += ["up", "--no-start", "--no-build", "--no-deps", service]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupError(f"docker compose up --no-start {service}: {done.stderr.strip()}")


def running(container: dict[str, Any]) -> bool:
    return bool(container["State"]["Running"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return config_env(container["Config"]["Env"])


class Repository:
    """pgBackRest's commands against the repository, in a container that mounts it."""

    def __init__(self, stack: Stack, holder: dict[str, Any]) -> None:
        self.stack = stack
        self.holder = holder  # a container whose volumes hold the repository and its key
        self.image = str(holder["Config"]["Image"])
        self.key_file = env_of(holder).get("BACKUP_KEY_FILE", "/run/secrets/backup_key")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.stack.docker(
            "run", "--rm", "--volumes-from", self.holder["Id"], "--network", "none",
            "--user", "postgres", "--env", f"BACKUP_KEY_FILE={self.key_file}",
            "--entrypoint", "with-backup-key", self.image,
            "pgbackrest", f"--stanza={STANZA}", *args, check=check,
        )  # fmt: skip

    def backups(self) -> list[dict[str, Any]]:
        info = json.loads(self.run("--output=json", "info").stdout)
        found: list[dict[str, Any]] = info[0].get("backup", []) if info else []
        return found


def exec_pgbackrest(stack: Stack, container: dict[str, Any], *args: str) -> str:
    return stack.docker(
        "exec", "--user", "postgres", container["Id"],
        "with-backup-key", "pgbackrest", f"--stanza={STANZA}", *args,
    ).stdout  # fmt: skip


# --- scripts/backup ---------------------------------------------------------------------------
def backup(stack: Stack, kind: str) -> int:
    service = stack.container("backup")
    if not running(service):
        raise BackupError("the backup service is not running (docker compose up backup)")
    started = time.monotonic()
    say(f"taking a {kind} backup")
    backup_now(lambda: exec_pgbackrest(stack, service, f"--type={kind}", "backup"))
    say(f"{kind} backup done in {time.monotonic() - started:.1f} s")
    return 0


def archiver(stack: Stack) -> dict[str, str]:
    """What Postgres says of its WAL archiving (pg_stat_archiver)."""
    db = stack.container("db")
    if not running(db):
        return {}
    user = env_of(db).get("POSTGRES_USER", "postgres")
    query = (
        "SELECT archived_count, failed_count, coalesce(last_archived_wal, ''), "
        "coalesce(last_archived_time::text, ''), coalesce(last_failed_wal, ''), "
        "coalesce(last_failed_time::text, ''), "
        "coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) "
        "FROM pg_stat_archiver"
    )
    row = stack.docker(
        "exec", db["Id"], "psql", "-U", user, "-d", user, "-AtF", "\t", "-c", query
    ).stdout.strip()
    names = ("archived", "failed", "last_archived_wal", "last_archived", "last_failed_wal",
             "last_failed", "failing")  # fmt: skip
    return dict(zip(names, row.split("\t"), strict=True))


def status(stack: Stack) -> int:
    service = stack.container("backup")
    repository = Repository(stack, service)
    print(repository.run("info").stdout.rstrip())
    diff_every = seconds(env_of(service).get("BACKUP_DIFF_EVERY", "1d"))
    allowed = STALE_AFTER_TURNS * diff_every
    now = time.time()
    problems = []
    backups = repository.backups()
    if backups:
        print("backups (newest last):")
        for item in backups:
            age = now - float(item["timestamp"]["stop"])
            size = int(item["info"]["repository"]["delta"])
            print(f"  {item['label']}  {item['type']:<5} age {readable(age):>8}  "
                  f"repository {size / 1e6:8.1f} MB")  # fmt: skip
        newest = now - max(float(item["timestamp"]["stop"]) for item in backups)
        if newest > allowed:
            problems.append(
                f"the newest backup is {readable(newest)} old "
                f"(allowed: {readable(allowed)} = {STALE_AFTER_TURNS} x BACKUP_DIFF_EVERY)"
            )
    else:
        problems.append("there is no backup")
    wal = archiver(stack)
    if wal:
        print(f"WAL archive: {wal['archived']} archived (last {wal['last_archived_wal']} at "
              f"{wal['last_archived'] or '-'}), {wal['failed']} failed (last "
              f"{wal['last_failed_wal'] or '-'} at {wal['last_failed'] or '-'})")  # fmt: skip
        if wal["failing"] == "t":
            problems.append(f"WAL archiving fails (last failure at {wal['last_failed']})")
    else:
        problems.append("Postgres is not running: the WAL archive's state is unknown")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


# --- scripts/restore --------------------------------------------------------------------------
def parse_target(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BackupError(f"--to {text!r}: not a timestamp (e.g. 2026-12-01 19:46:38+00)") from None
    if moment.tzinfo is None:
        raise BackupError(f"--to {text!r}: give its time zone (e.g. 2026-12-01 19:46:38+00)")
    return moment


def check_repository(repository: Repository, to: datetime | None) -> None:
    """Raises, before anything is touched, when the restore could not succeed."""
    backups = repository.backups()
    if not backups:
        raise BackupError("the repository holds no backup: nothing to restore from")
    if to is not None:
        finished = [b for b in backups if float(b["timestamp"]["stop"]) <= to.timestamp()]
        if not finished:
            oldest = datetime.fromtimestamp(
                min(float(b["timestamp"]["stop"]) for b in backups), UTC
            )
            raise BackupError(
                f"no backup finished before {to.isoformat()} (the oldest finished at "
                f"{oldest.isoformat()}): that time cannot be restored"
            )
    say("verifying the repository (pgbackrest verify)")
    verified = repository.run("verify", check=False)
    # verify exits 0 when it finds invalid files too: its summary says "status: error".
    if verified.returncode != 0 or "status: error" in verified.stdout:
        output = "\n".join(
            line
            for line in (verified.stdout + verified.stderr).splitlines()
            if "INFO: verify command" not in line
        )
        raise BackupError(f"the repository failed verification:\n{output.strip()[-3000:]}")


def restore(stack: Stack, to: datetime | None) -> int:
    started = time.monotonic()
    recreated = [service for service in ("db", "backup") if not stack.containers(service)]
    for service in recreated:
        # A lost data volume takes its containers with it: compose makes them (and an empty
        # volume) again, unstarted. The backups and the key live in volumes of their own.
        say(f"no {service} container: creating it (a missing volume is created empty)")
        stack.compose_create(service)
    db = stack.container("db")
    repository = Repository(stack, db)
    try:
        check_repository(repository, to)
    except BackupError as error:
        raise BackupError(f"{error}\nnothing was changed: the database is as it was") from None

    writers = [c for c in stack.containers(APP) if running(c)]
    writers += [c for c in stack.containers("backup") if running(c) or "backup" in recreated]
    say(f"stopping the app and the backup service ({len(writers)} containers)")
    stack.docker("stop", *(c["Id"] for c in writers))
    if running(db):
        say("archiving the current WAL (pgbackrest check)")
        try:
            exec_pgbackrest(stack, db, "check")
        except BackupError as error:
            stack.docker("start", *(c["Id"] for c in writers))
            raise BackupError(
                f"the current WAL could not be archived, so the restore would lose work: "
                f"{error}\nnothing was changed; the app was started again"
            ) from None
        stack.docker("stop", db["Id"])
    options = ["--delta"]
    if to is not None:
        options += ["--type=time", f"--target={to.isoformat(sep=' ')}", "--target-action=promote"]
    say(f"restoring {'to ' + to.isoformat() if to else 'the latest'} into the data volume")
    repository.run(*options, "restore")
    say("starting Postgres: it replays the archive, then is promoted")
    stack.docker("start", db["Id"])
    wait_for_writes(stack, db)
    stack.docker("start", *(c["Id"] for c in writers))
    say(f"restored in {time.monotonic() - started:.1f} s; the app and backups run again")
    return 0


def wait_for_writes(stack: Stack, db: dict[str, Any]) -> None:
    """Returns once Postgres accepts writes (recovery done, promoted)."""
    user = env_of(db).get("POSTGRES_USER", "postgres")

    def promoted() -> bool:
        answer = stack.docker(
            "exec", db["Id"], "psql", "-U", user, "-d", user, "-Atc",
            "SELECT pg_is_in_recovery()", check=False,
        )  # fmt: skip
        return answer.returncode == 0 and answer.stdout.strip() == "f"

    if eventually(promoted, RECOVERY_TIMEOUT_SECONDS, interval=1):
        return
    logs = stack.docker("logs", "--tail", "30", db["Id"], check=False)
    raise BackupError(
        f"Postgres did not finish recovery within {RECOVERY_TIMEOUT_SECONDS} s; the app stays "
        f"stopped. Its last lines:\n{(logs.stdout + logs.stderr)[-3000:]}"
    )


def main(command: str, argv: list[str]) -> int:
    """`command`: the name this file runs as (scripts/backup and scripts/restore link here)."""
    parser = argparse.ArgumentParser(prog=f"scripts/{command}", description=__doc__.split("\n")[0])
    parser.add_argument("environment", nargs="?", help="deploy/ENV.env (default: the local stack)")
    parser.add_argument(
        "--env-file", type=Path, default=ROOT / ".env", help="the local stack's variables"
    )
    action = parser.add_mutually_exclusive_group(required=command == "restore")
    if command == "backup":
        action.add_argument("--full", action="store_true", help="a full backup")
        action.add_argument("--diff", action="store_true", help="a differential backup")
        action.add_argument("--status", action="store_true", help="backups and the WAL archive")
    elif command == "restore":
        action.add_argument("--latest", action="store_true", help="up to the last archived WAL")
        action.add_argument("--to", metavar="TIMESTAMP", help="as it was then (with time zone)")
    else:
        parser.error("run as scripts/backup or scripts/restore")
    args = parser.parse_args(argv)
    try:
        stack = Stack.load(args.environment, args.env_file)
        if command == "restore":
            return restore(stack, parse_target(args.to) if args.to else None)
        if args.status:
            return status(stack)
        return backup(stack, "full" if args.full else "diff" if args.diff else "incr")
    except BackupError as error:
        print(f"[backups] failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[0]).name, sys.argv[1:]))
