"""`scripts/rotate-db-password` under the shared traffic (32 clients, mixed reads and writes):
two rotations and a replica restarted on the new password fail no request; afterwards the new
password logs in, the old one is refused, the running replicas have opened new sessions with
it, and backups still run."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack_facts import eventually
from tests.integration.stack import Stack
from tests.integration.traffic import MixedTraffic
from tests.project import ROOT

ROTATIONS = 2
PASSWORD_FILE = "/run/secrets/db_password"
# Pooled connections are replaced every few seconds under the traffic (instead of asyncpg's
# 50,000 queries), so that the app opens connections while the rotation runs, and after it.
MAX_QUERIES = "50"
# Logs in as the app does, the password on stdin; prints the outcome's name.
LOG_IN = """
import asyncio, sys
import asyncpg
async def main() -> str:
    try:
        secret = sys.stdin.read()
        connection = await asyncpg.connect("postgresql://app@db:5432/app", password=secret)
    except asyncpg.PostgresError as error:
        return type(error).__name__
    await connection.close()
    return "accepted"
print(asyncio.run(main()))
"""


@pytest.fixture(scope="module")
def stack(stack_workdir: Path) -> Iterator[Stack]:
    overrides = {
        "HTTP_PORT": "52080",
        "HTTPS_PORT": "52443",
        "APP_DB_POOL_MAX_QUERIES": MAX_QUERIES,
    }
    with Stack("rotate-password", stack_workdir, overrides=overrides).running() as rotating:
        yield rotating


def password(stack: Stack) -> str:
    code, output = stack.exec("db", "cat", PASSWORD_FILE)
    assert code == 0, output
    return output


def log_in(stack: Stack, secret: str) -> str:
    """What Postgres answers the app's container for this password, over the network."""
    done = subprocess.run(
        ["docker", "exec", "-i", stack.container("app").id, "python", "-c", LOG_IN],
        input=secret, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def script(stack: Stack, name: str) -> float:
    """Runs scripts/NAME on the stack as an operator would; its duration."""
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "scripts" / name), "--env-file", str(stack.env_file)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"scripts/{name}: exit {done.returncode} in {took:.1f} s\n{done.stdout}{done.stderr}")
    assert done.returncode == 0
    return took


def replicas_with_sessions_since(stack: Stack, moment: str) -> int:
    """How many replicas began sessions since then (over the network: psql's use the socket)."""
    return int(
        stack.psql(
            "SELECT count(DISTINCT client_addr) FROM pg_stat_activity WHERE usename = 'app' "
            f"AND client_addr IS NOT NULL AND backend_start > '{moment}'"
        )
    )


def test_rotation_under_traffic_fails_no_request(stack: Stack) -> None:
    passwords = [password(stack)]
    with MixedTraffic(stack) as traffic:
        time.sleep(3)
        for _ in range(ROTATIONS):
            took = script(stack, "rotate-db-password")
            print(f"rotated in {took:.1f} s")
            passwords.append(password(stack))
            time.sleep(3)
        rotated = stack.psql("SELECT now()")
        # A replica started now has only the new password (its pool opens at start-up).
        replica = stack.containers("app")[0]
        replica.restart(timeout=60)
        stack.wait_healthy(replica)
        time.sleep(3)
    traffic.verify()
    assert len(traffic.writes) > 500

    # (Never the passwords themselves in a failure's report.)
    distinct = len(set(passwords))
    assert distinct == ROTATIONS + 1, "every rotation sets a new password"
    well_formed = all(len(secret) == 40 and secret.isalnum() for secret in passwords)
    assert well_formed, "40 alphanumerics, as the secrets service makes them"
    code, listing = stack.exec("db", "ls", "-l", "/run/secrets")
    assert code == 0, listing
    assert "db_password.new" not in listing, listing
    assert listing.count("-r--r--r--") == 1, listing  # read-only, as the secrets service makes it
    assert log_in(stack, passwords[-1]) == "accepted"
    for old in passwords[:-1]:
        assert log_in(stack, old) == "InvalidPasswordError"
    # SCRAM, never MD5: what psql's \password sent.
    verifier = stack.psql("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'app'")
    assert verifier == "SCRAM-SHA-256$"
    # Both replicas, the one never restarted too, made sessions with it.
    assert eventually(lambda: replicas_with_sessions_since(stack, rotated) == 2, timeout=10)
    # pgBackRest reaches Postgres through its socket, which needs no password.
    script(stack, "backup")


def command_lines() -> list[bytes]:
    """Every process's command line, as `ps` shows them (containers' processes included)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(cmdline.read_bytes())
        except OSError:
            continue  # it ended meanwhile
    return found


def test_the_password_is_never_on_a_command_line(stack: Stack) -> None:
    """The rotation's processes, sampled while they run (psql's too, in its container), show
    neither the old password nor the new one."""
    old = password(stack)
    seen: set[bytes] = set()
    rotating = subprocess.Popen(
        [str(ROOT / "scripts" / "rotate-db-password"), "--env-file", str(stack.env_file)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while rotating.poll() is None:
        seen.update(command_lines())
    assert rotating.returncode == 0
    assert any(line.startswith(b"psql\0") for line in seen), "never saw psql run"
    secrets = (old.encode(), password(stack).encode())
    showing = sum(any(secret in line for secret in secrets) for line in seen)
    assert showing == 0, f"{showing} command lines held a password"
