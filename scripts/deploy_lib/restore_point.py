"""A backup before a release that brings migrations: where `scripts/restore --to` returns if a
migration goes wrong (README "Backups and restore")."""

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime

from deploy_lib.images import Images
from deploy_lib.target import ROOT, DeployError, Target, say

MIGRATIONS = "service/db/migrations"
# pgBackRest's stanza (postgres/pgbackrest.conf), an incremental backup in the backup service's
# container, and pgBackRest's error when another backup holds the lock.
STANZA = "main"
BACKUP_INCR = ("with-backup-key", "pgbackrest", f"--stanza={STANZA}", "--type=incr", "backup")
BACKUP_LOCKED = "aborted with exception [050]"


def take_restore_point(target: Target, images: Images) -> None:
    """A backup before a release whose migrations the database has not applied yet."""
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{images.commit}:{MIGRATIONS}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    dbs = target.running("db")
    applied = target.docker(
        "exec", dbs[0], "sh", "-c",
        'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "SELECT name FROM schema_migrations"',
        check=False,
    ).split()  # fmt: skip
    new = sorted(name for name in listed if name.endswith(".sql") and name not in applied)
    if not new or not applied:  # nothing new, or a database no release has migrated yet
        return
    # The time to give `scripts/restore --to` to undo what this release's migrations do.
    before = datetime.now(UTC).isoformat(sep=" ", timespec="seconds")
    say(f"{images.commit} brings migrations {', '.join(new)}: taking a backup first ({before})")
    backups = target.running("backup")
    if not backups:
        raise DeployError("no backup service runs, so no restore point can be taken")
    backup_now(lambda: target.docker("exec", "--user", "postgres", backups[0], *BACKUP_INCR))
    say("restore point taken (scripts/restore --to a time before this deploy returns to it)")


def backup_now(run: Callable[[], object], wait: float = 3600) -> None:
    """Runs a pgBackRest backup, waiting while another one (the backup service's) holds the
    stanza's lock: pgBackRest runs one at a time and fails the second at once."""
    started = time.monotonic()
    while True:
        try:
            run()
            return
        except DeployError as error:
            if BACKUP_LOCKED not in str(error) or time.monotonic() - started > wait:
                raise
            say("another backup is running (the backup service's); waiting for it")
            time.sleep(5)
