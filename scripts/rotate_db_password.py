#!/usr/bin/env python3
"""Rotates the database password of a running stack, with no restart and no failed request
(SECURITY.md, "Rotating the database password").

    scripts/rotate-db-password [ENV] [--env-file FILE]

ENV is an env file of scripts/deploy (deploy/ENV.env, or a path): the target's engine and its
project. Without it: the local stack of `docker compose up` (--env-file, default .env).

One throw-away container, with the db image, on no network, mounting the secrets volume and
Postgres's socket: it writes a new random password next to the old one, sets it on the role
with psql's \\password (psql hashes it with SCRAM-SHA-256 itself: Postgres never sees it in
clear, and it is never on a command line or in an environment), then renames the file into
place. Sessions already open carry on; the app reads the file for each new connection and,
refused in the instant between the two steps, waits for the rename (service/db/password.py).
A failed run changes nothing the next run does not put right: run it again. Standard library
only; Swarm targets are not supported (their secrets are immutable).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backups import BackupError, Stack, env_of, running
from deploy_lib.target import ROOT

SOCKET_DIR = "/var/run/postgresql"
# As the secrets service writes it (compose.yaml): 40 alphanumerics, a read-only file; the new
# one under another name until the role has it. Postgres trusts its socket (the image's
# pg_hba.conf, as pgBackRest relies on too): the old password is not needed.
# $1 the password file, $2 the role, $3 its database, $4 Postgres's socket directory.
ROTATE = r"""
set -eu
file="$1" role="$2" database="$3" socket="$4"
pending="$file.new"
umask 0222
rm -f "$pending"
tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 40 > "$pending"
# An empty answer to \password would clear the role's password.
[ "$(wc -c < "$pending")" -eq 40 ]
# \password prompts twice (on stderr), reading the answers from stdin: no tty here.
if ! { cat "$pending"; echo; cat "$pending"; echo; } | psql -X -q -v ON_ERROR_STOP=1 \
    -h "$socket" -U "$role" -d "$database" -c "\password \"$role\"" 2>/tmp/psql.err; then
  cat /tmp/psql.err >&2
  exit 1
fi
mv -f "$pending" "$file"
"""


def say(message: str) -> None:
    print(f"[rotate-db-password] {message}", flush=True)


def volume_at(container: dict[str, Any], destination: str) -> str:
    for mount in container["Mounts"]:
        if mount["Destination"] == destination and mount["Type"] == "volume":
            return str(mount["Name"])
    raise BackupError(f"{container['Name']} mounts no volume at {destination}")


def rotate(stack: Stack) -> int:
    db = stack.container("db")
    if not running(db):
        raise BackupError("Postgres is not running (docker compose up db)")
    env = env_of(db)
    password_file = PurePosixPath(env["POSTGRES_PASSWORD_FILE"])
    role = env.get("POSTGRES_USER", "postgres")
    database = env.get("POSTGRES_DB", role)
    started = time.monotonic()
    say(f"rotating the password of role {role!r} in project {stack.project}")
    stack.docker(
        # Root, as the secrets service (compose.yaml), for the root-owned secrets volume; no
        # capability. The db image's own user is postgres.
        "run", "--rm", "--network", "none", "--user", "0", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true",
        "--volume", f"{volume_at(db, str(password_file.parent))}:{password_file.parent}",
        "--volume", f"{volume_at(db, SOCKET_DIR)}:{SOCKET_DIR}",
        "--entrypoint", "sh", str(db["Config"]["Image"]),
        "-c", ROTATE, "rotate", str(password_file), role, database, SOCKET_DIR,
    )  # fmt: skip
    say(f"done in {time.monotonic() - started:.1f} s: new connections use the new password")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/rotate-db-password", description=__doc__.split("\n")[0]
    )
    parser.add_argument("environment", nargs="?", help="deploy/ENV.env (default: the local stack)")
    parser.add_argument(
        "--env-file", type=Path, default=ROOT / ".env", help="the local stack's variables"
    )
    args = parser.parse_args(argv)
    try:
        return rotate(Stack.load(args.environment, args.env_file))
    except BackupError as error:
        print(f"[rotate-db-password] failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
