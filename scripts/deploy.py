#!/usr/bin/env python3
"""Ship a commit to a Docker host and roll it out without dropping a request.

    scripts/deploy ENV [--commit REV]      build (once), transfer, roll out
    scripts/deploy ENV --status            what serves, and how the last deploy went
    scripts/deploy ENV --rollback          roll back to the previous image

ENV names deploy/ENV.env (or is a path to an env file): compose variables plus the target,
DOCKER_HOST (e.g. ssh://deploy@host) or DOCKER_CONTEXT. An env file that names neither is
refused, unless it says DEPLOY_LOCAL_ENGINE=yes to deploy to this machine's own engine: the
shipped files name none until the runbook's step 3, and deploying them here would take ports
80/443 and start ACME. The target's engine is reached first, so a host that is unreachable or
whose SSH key has changed fails the deploy before anything is built, sent or changed.

Exit status: 0 done (--status: a healthy replica serves); 1 failed (--status: deployed, none
serving); 2 bad arguments; 3 (--status only) nothing deployed on the target. No registry is needed:
the images are built here from `git archive` (the app tagged with the commit, the edge with
the hash of caddy/, so Caddy restarts only when its configuration changed, the database with
the hash of postgres/) and sent with `docker save | docker load` when the target lacks them.
A running database is never recreated by a deploy: a new database image takes effect at its
next planned restart (README "Backups and restore").

With plain compose (the default), the rollout starts the new replicas beside the old ones,
waits until they are healthy and in Caddy's upstream set, then stops the old ones (SIGTERM:
their listeners close at once, so Caddy retries elsewhere, while in-flight requests finish
and running jobs are put back). If the new replicas are not healthy within
DEPLOY_HEALTH_TIMEOUT, or one exits, their last log lines are printed, they are removed, the
old ones keep serving, and the deploy exits non-zero.

With DEPLOY_MODE=swarm, the stack is rendered from compose.yaml + compose.staging.yaml +
compose.swarm.yaml and handed to `docker stack deploy`; Swarm rolls the update (start-first,
health-gated) and rolls it back by itself when the new tasks fail. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ("compose.yaml", "compose.staging.yaml")
SWARM_FILES = (*COMPOSE_FILES, "compose.swarm.yaml")
APP = "app"
EDGE = "proxy"
CADDY_DNS_REFRESH_SECONDS = 1.0  # caddy/Caddyfile: dynamic a ... refresh 1s
CADDY_DIAL_TIMEOUT_SECONDS = 2.0  # caddy/Caddyfile: dial_timeout 2s
# A reload cancels the old config, and with it the retry of any request of that config still
# dialing a replica that roll_out has just stopped (a 502, whatever the method). Caddy forgets a
# stopped replica within its DNS refresh, and gives up dialing one within its dial timeout.
EDGE_SETTLE_SECONDS = CADDY_DNS_REFRESH_SECONDS + CADDY_DIAL_TIMEOUT_SECONDS
# The Caddyfile the running edge runs (caddy/run-edge keeps it per container).
RUNNING_CADDYFILE = "/config/Caddyfile.$HOSTNAME"
# Loads the Caddyfile on stdin into the running edge, and keeps it where caddy/run-edge starts
# that container from: a failed reload (an invalid file) leaves both as they were.
RELOAD_EDGE = f"""set -eu
cat >"{RUNNING_CADDYFILE}.next"
caddy reload --config "{RUNNING_CADDYFILE}.next" --adapter caddyfile
mv "{RUNNING_CADDYFILE}.next" "{RUNNING_CADDYFILE}"
"""
MIGRATIONS = "service/db/migrations"
# pgBackRest's stanza (postgres/pgbackrest.conf), an incremental backup in the backup service's
# container, and pgBackRest's error when another backup holds the lock.
STANZA = "main"
BACKUP_INCR = ("with-backup-key", "pgbackrest", f"--stanza={STANZA}", "--type=incr", "backup")
BACKUP_LOCKED = "aborted with exception [050]"
# An env file names its target's engine with one of these (docker's own variables).
TARGET_KEYS = ("DOCKER_HOST", "DOCKER_CONTEXT")
# docker's ssh transport gives ssh a 30 s ConnectTimeout; this bounds the whole check.
REACH_TIMEOUT_SECONDS = 60
# --status: nothing of this project is deployed on the target.
NOTHING_DEPLOYED = 3
DEFAULTS = {
    "APP_IMAGE_REPOSITORY": "service",
    "DEPLOY_HEALTH_TIMEOUT": "120",
    "APP_REPLICAS": "2",
    "DEPLOY_MODE": "compose",
}


class DeployError(Exception):
    pass


def say(message: str) -> None:
    print(f"[deploy] {message}", flush=True)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DeployError(f"{path}:{number}: expected NAME=value")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@dataclass
class Target:
    """One environment: its settings and the Docker engine it lives on."""

    name: str
    env_file: Path
    settings: dict[str, str]

    @classmethod
    def load(cls, environment: str) -> Target:
        path = Path(environment)
        if not path.is_file():
            path = ROOT / "deploy" / f"{environment}.env"
        if not path.is_file():
            raise DeployError(f"no env file for {environment!r} (looked for {path})")
        settings = {**DEFAULTS, **read_env_file(path)}
        settings.setdefault("COMPOSE_PROJECT_NAME", f"service-{path.stem}")
        names_engine = any(settings.get(key) for key in TARGET_KEYS)
        if not names_engine and settings.get("DEPLOY_LOCAL_ENGINE") != "yes":
            raise DeployError(
                f"{path} names no target: set DOCKER_HOST=ssh://deploy@your-host (or "
                "DOCKER_CONTEXT) as README's runbook says (step 3); to deploy to this "
                "machine's own engine, set DEPLOY_LOCAL_ENGINE=yes"
            )
        return cls(path.stem, path.resolve(), settings)

    @property
    def project(self) -> str:
        return self.settings["COMPOSE_PROJECT_NAME"]

    @property
    def repository(self) -> str:
        return self.settings["APP_IMAGE_REPOSITORY"]

    @property
    def swarm(self) -> bool:
        mode = self.settings["DEPLOY_MODE"]
        if mode not in ("compose", "swarm"):
            raise DeployError(f"DEPLOY_MODE must be compose or swarm, not {mode!r}")
        return mode == "swarm"

    @property
    def engine(self) -> str:
        """How the target's engine is named, for messages."""
        for key in TARGET_KEYS:
            if self.settings.get(key):
                return self.settings[key]
        return "this machine's engine"

    def docker_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **extra}
        for key in TARGET_KEYS:
            if self.settings.get(key):
                env[key] = self.settings[key]
        return env

    def docker(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["docker", *args], env=self.docker_env(), capture_output=True, text=True, input=stdin
        )
        if check and result.returncode != 0:
            raise DeployError(f"docker {' '.join(args[:3])}: {result.stderr.strip()}")
        return result.stdout.strip()

    def succeeds(self, *args: str) -> bool:
        command = ["docker", *args]
        return subprocess.run(command, env=self.docker_env(), capture_output=True).returncode == 0

    def compose(self, *args: str, images: Images) -> str:
        names = SWARM_FILES if self.swarm else COMPOSE_FILES
        files = [arg for name in names for arg in ("-f", str(ROOT / name))]
        command = [
            "docker", "compose", "--project-name", self.project,
            "--env-file", str(self.env_file), *files, *args,
        ]  # fmt: skip
        environment = self.docker_env(**images.environment())
        result = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise DeployError(f"docker compose {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    # --- what runs --------------------------------------------------------------------------
    def app_containers(self) -> list[str]:
        return self.running(APP)

    def running(self, service: str) -> list[str]:
        ids = self.docker(
            "ps", "--quiet",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        )  # fmt: skip
        return ids.split()

    def inspect(self, *ids: str) -> list[dict[str, Any]]:
        if not ids:
            return []
        inspected: list[dict[str, Any]] = json.loads(self.docker("inspect", *ids))
        return inspected

    def inspect_services(self, *names: str) -> list[dict[str, Any]]:
        raw = self.docker("service", "inspect", *names, check=False)
        found: list[dict[str, Any]] = json.loads(raw) if raw else []
        return found

    def has_image(self, image: str) -> bool:
        return self.succeeds("image", "inspect", image)

    def commit_of(self, image: str) -> str:
        """The commit an image was built from (its APP_VERSION)."""
        env = self.docker("image", "inspect", "--format", "{{json .Config.Env}}", image)
        for variable in json.loads(env):
            name, _, value = str(variable).partition("=")
            if name == "APP_VERSION":
                return value
        raise DeployError(f"{image} has no APP_VERSION: not built by scripts/deploy")

    def engine_id(self) -> str:
        return self.docker("info", "--format", "{{.ID}}")

    def reach(self) -> None:
        """Fails unless the target's engine answers: an SSH host that is down, refuses the
        key, or presents a host key that does not match known_hosts."""
        try:
            result = subprocess.run(
                ["docker", "info", "--format", "{{.ID}}"], env=self.docker_env(),
                capture_output=True, text=True, timeout=REACH_TIMEOUT_SECONDS,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            reason = f"no answer within {REACH_TIMEOUT_SECONDS} s"
        else:
            if result.returncode == 0 and result.stdout.strip():
                return
            reason = result.stderr.strip() or result.stdout.strip()
        raise DeployError(f"cannot reach the Docker engine at {self.engine}: {reason}")


def health_of(container: dict[str, Any]) -> str:
    """An inspected container's health status ("" when it has no healthcheck)."""
    return str(container["State"].get("Health", {}).get("Status", ""))


def local_engine(target: Target) -> Target:
    """The engine this machine's docker CLI reaches without the target's host or context."""
    settings = {k: v for k, v in target.settings.items() if k not in TARGET_KEYS}
    return Target("local", target.env_file, settings)


# --- the deploy record, kept on the target as labels of a container that never runs ----------
def record_name(target: Target) -> str:
    return f"{target.project}-deploy-record"


def record(target: Target, image: str, **labels: str) -> None:
    name = record_name(target)
    target.docker("rm", "--force", name, check=False)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    label_args = [
        f"--label=deploy.{key}={value}" for key, value in {**labels, "time": stamp}.items()
    ]
    target.docker("create", "--name", name, *label_args, image, "true")


def read_record(target: Target) -> dict[str, str]:
    raw = target.docker(
        "inspect", "--format", "{{json .Config.Labels}}", record_name(target), check=False
    )
    labels: dict[str, str] = json.loads(raw) if raw else {}
    return {k.removeprefix("deploy."): v for k, v in labels.items() if k.startswith("deploy.")}


# --- build and ship ---------------------------------------------------------------------------
def git_hash(revision: str) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short=12", revision], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise DeployError(f"unknown revision {revision!r}: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass(frozen=True)
class Images:
    """What one commit deploys: the app, the edge with its Caddyfile, and the database image
    (Postgres with pgBackRest, which the backup service runs too)."""

    commit: str
    app: str
    proxy: str
    db: str

    @classmethod
    def of(cls, target: Target, commit: str) -> Images:
        repository = target.repository
        return cls(
            commit,
            f"{repository}:{commit}",
            f"{repository}-proxy:{git_hash(f'{commit}:caddy')}",
            f"{repository}-db:{git_hash(f'{commit}:postgres')}",
        )

    def environment(self) -> dict[str, str]:
        """What compose.staging.yaml and compose.swarm.yaml read the images from."""
        return {"APP_IMAGE": self.app, "PROXY_IMAGE": self.proxy, "DB_IMAGE": self.db}

    def builds(self) -> list[tuple[str, str, list[str]]]:
        """(image, tree-ish to build from, build arguments) for each image."""
        return [
            (self.app, self.commit, ["--build-arg", f"VERSION={self.commit}"]),
            (self.proxy, f"{self.commit}:caddy", []),
            (self.db, f"{self.commit}:postgres", []),
        ]


def build(local: Target, image: str, tree: str, arguments: list[str]) -> None:
    """Builds exactly what the commit holds (git archive), never the working tree's edits."""
    say(f"building {image} from {tree}")
    archive = subprocess.Popen(
        ["git", "archive", "--format=tar", tree], cwd=ROOT, stdout=subprocess.PIPE
    )
    result = subprocess.run(
        ["docker", "build", "--quiet", "--tag", image, *arguments, "-"],
        stdin=archive.stdout, env=local.docker_env(), capture_output=True, text=True,
    )  # fmt: skip
    if archive.wait() != 0 or result.returncode != 0:
        raise DeployError(f"build of {image} failed:\n{result.stderr.strip()[-2000:]}")


def ensure_images(target: Target, images: Images) -> None:
    """Each image on the target: built on this machine's engine if needed, shipped if that is
    not the target's. A target that has them all needs no local engine (a rollback)."""
    missing = []
    for image, tree, arguments in images.builds():
        if target.has_image(image):
            say(f"{image} is already on the target")
        else:
            missing.append((image, tree, arguments))
    if not missing:
        return
    local = local_engine(target)
    same_engine = local.engine_id() == target.engine_id()
    for image, tree, arguments in missing:
        if not local.has_image(image):
            build(local, image, tree, arguments)
        if not same_engine:
            ship(local, target, image)


def ship(local: Target, target: Target, image: str) -> None:
    say(f"sending {image} to the target (docker save | docker load)")
    save = subprocess.Popen(
        ["docker", "save", image], env=local.docker_env(), stdout=subprocess.PIPE
    )
    loaded = subprocess.run(
        ["docker", "load", "--quiet"], stdin=save.stdout, env=target.docker_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    if save.wait() != 0 or loaded.returncode != 0:
        raise DeployError(f"transfer failed: {loaded.stderr.strip()}")


# --- roll out ---------------------------------------------------------------------------------
def wait_healthy(target: Target, containers: list[str], timeout: float) -> str | None:
    """None when all are healthy, else why not. A replica that exits while starting (a failed
    migration, a setting the app refuses) fails the rollout at once: each restart would try
    again, and its migration would again hold the requests on its table for lock_timeout."""
    deadline = time.monotonic() + timeout
    while True:
        inspected = target.inspect(*containers)
        exited = [c for c in inspected if c["RestartCount"] or c["State"]["Status"] != "running"]
        if exited:
            summary = ", ".join(
                f"{c['Id'][:12]} restarted {c['RestartCount']} times"
                if c["RestartCount"]
                else f"{c['Id'][:12]} {c['State']['Status']}, exit {c['State']['ExitCode']}"
                for c in exited
            )
            return f"exited while starting ({summary})"
        states = {c["Id"]: health_of(c) for c in inspected}
        if all(state == "healthy" for state in states.values()):
            return None
        if time.monotonic() > deadline:
            summary = ", ".join(f"{c[:12]} {s or 'no health status'}" for c, s in states.items())
            return f"not healthy within {timeout:.0f} s ({summary})"
        time.sleep(1)


def stop(target: Target, containers: list[str]) -> None:
    if containers:
        # No --time: each container's own stop timeout (compose.yaml's stop_grace_period, which
        # covers the lame duck, graceful_timeout and shutdown_timeout) applies.
        target.docker("stop", *containers)
        target.docker("rm", *containers)


def roll_out(target: Target, images: Images) -> None:
    replicas = int(target.settings["APP_REPLICAS"])
    old = target.app_containers()
    # The database and its backups first (a no-op when they run), then the app, then the edge.
    target.compose(
        "up", "--detach", "--no-build", "--no-recreate", "--wait",
        "secrets", "db", "backup", images=images,
    )  # fmt: skip
    take_restore_point(target, images)
    if not old:
        say(f"first deploy: starting {replicas} replicas of {images.app}")
        target.compose("up", "--detach", "--no-build", "--wait", images=images)
        return

    say(f"starting {replicas} replicas of {images.app} beside the {len(old)} running")
    target.compose(
        "up", "--detach", "--no-build", "--no-deps", "--no-recreate",
        "--scale", f"{APP}={len(old) + replicas}", APP, images=images,
    )  # fmt: skip
    new = [c for c in target.app_containers() if c not in old]
    problem = wait_healthy(target, new, float(target.settings["DEPLOY_HEALTH_TIMEOUT"]))
    if problem:
        say(f"rolling back: {images.app} {problem}; the running version keeps serving")
        print_last_logs(target, new)
        stop(target, new)
        raise DeployError(f"{images.app} {problem}")
    time.sleep(2 * CADDY_DNS_REFRESH_SECONDS)  # Caddy's upstream set now includes them
    say(f"new replicas healthy; draining and stopping the {len(old)} old ones")
    stop(target, old)
    update_edge(target, images)


def print_last_logs(target: Target, containers: list[str], lines: int = 20) -> None:
    """What failed replicas logged last, before they are removed: why they did not start (a
    migration's error, a setting the app refused)."""
    for container in containers:
        logs = subprocess.run(
            ["docker", "logs", "--tail", str(lines), container],
            env=target.docker_env(), capture_output=True, text=True,
        )  # fmt: skip
        say(f"the last {lines} log lines of {container[:12]}:")
        print((logs.stdout + logs.stderr).rstrip(), flush=True)


def take_restore_point(target: Target, images: Images) -> None:
    """A backup before a release whose migrations the database has not applied yet: where the
    data can be restored to if a migration goes wrong (README "Backups and restore")."""
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


def update_edge(target: Target, images: Images) -> None:
    """The edge on the Caddyfile of images.proxy. A running Caddy of the same version loads it
    in place: `caddy reload` keeps the listeners, so no connection is refused, and in-flight
    requests finish (caddy/run-edge keeps the loaded file for that container's restarts). No
    edge yet, or a new Caddy version, means (re)creating the container: about a second of
    refused connections."""
    running = target.running(EDGE)
    if running:
        edge = running[0]
        inside = target.docker("exec", edge, "caddy", "version")
        shipped, caddyfile = target.docker(
            "run", "--rm", "--entrypoint", "sh", images.proxy,
            "-c", "caddy version && cat /etc/caddy/Caddyfile",
        ).split("\n", 1)  # fmt: skip
        if inside == shipped:
            loaded = target.docker(
                "exec", edge, "sh", "-c", f'cat "{RUNNING_CADDYFILE}"', check=False
            )
            if loaded == caddyfile:
                say("edge: its Caddyfile is unchanged")
                return
            time.sleep(EDGE_SETTLE_SECONDS)
            target.docker("exec", "--interactive", edge, "sh", "-c", RELOAD_EDGE, stdin=caddyfile)
            say(f"edge: loaded the Caddyfile of {images.proxy} in place")
            return
        say(f"edge: Caddy {inside} -> {shipped}: recreating the container")
    target.compose("up", "--detach", "--no-build", "--no-deps", "--wait", EDGE, images=images)


# --- Swarm ------------------------------------------------------------------------------------
SWARM_ROLLED_BACK = {"rollback_completed", "rollback_paused", "paused"}


def render_stack(target: Target, images: Images) -> str:
    """compose.yaml and its overlays, merged by compose v2, in the form `docker stack deploy`
    reads: its loader rejects compose's long depends_on (Swarm ignores start-up order), the
    project name, null fields and variables, octal strings and string ports that compose v2
    writes."""
    stack: dict[str, Any] = json.loads(target.compose("config", "--format", "json", images=images))
    stack.pop("name", None)
    for key in [key for key in stack if key.startswith("x-")]:
        del stack[key]
    for service in stack["services"].values():
        for key in ("depends_on", "build", *(k for k, v in service.items() if v is None)):
            service.pop(key, None)
        # Settings the env file leaves unset keep the app's defaults (compose.yaml).
        environment = service.get("environment", {})
        service["environment"] = {k: v for k, v in environment.items() if v is not None}
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        if "cpus" in limits:
            limits["cpus"] = str(limits["cpus"])
        for secret in service.get("secrets", []):
            if isinstance(secret.get("mode"), str):
                secret["mode"] = int(secret["mode"], 8)
        for port in service.get("ports", []):
            port["published"] = int(port["published"])
    return json.dumps(stack)


# Swarm's secrets of the stack, and the length of each (compose's secrets service makes the
# same two on a plain compose host).
SWARM_SECRETS = {"db_password": 30, "backup_key": 48}


def ensure_swarm_secrets(target: Target) -> None:
    """The database password and the backup repository's key, each created once in Swarm's
    secret store (never on disk here)."""
    for secret, length in SWARM_SECRETS.items():
        name = f"{target.project}_{secret}"
        if target.succeeds("secret", "inspect", name):
            continue
        say(f"creating the secret {name}")
        created = subprocess.run(
            ["docker", "secret", "create", name, "-"], input=secrets.token_urlsafe(length),
            env=target.docker_env(), capture_output=True, text=True,
        )  # fmt: skip
        if created.returncode != 0:
            raise DeployError(f"docker secret create: {created.stderr.strip()}")


def swarm_service(target: Target) -> dict[str, Any] | None:
    found = target.inspect_services(f"{target.project}_{APP}")
    return found[0] if found else None


def swarm_roll_out(target: Target, images: Images) -> None:
    ensure_swarm_secrets(target)
    stack = render_stack(target, images)
    say(f"docker stack deploy {target.project} with {images.app}")
    deployed = subprocess.run(
        ["docker", "stack", "deploy", "--compose-file", "-", target.project],
        input=stack, env=target.docker_env(), capture_output=True, text=True,
    )  # fmt: skip
    if deployed.returncode != 0:
        raise DeployError(f"docker stack deploy: {deployed.stderr.strip()}")
    deadline = time.monotonic() + 2 * float(target.settings["DEPLOY_HEALTH_TIMEOUT"])
    replicas = int(target.settings["APP_REPLICAS"])
    while time.monotonic() < deadline:
        time.sleep(2)
        service = swarm_service(target)
        if service is None:
            continue
        update = service.get("UpdateStatus") or {}
        state = update.get("State")
        if state in SWARM_ROLLED_BACK:
            raise DeployError(f"Swarm rolled the update back: {update.get('Message', state)}")
        if state not in (None, "completed"):
            continue
        running = target.docker(
            "service", "ps", "--filter", "desired-state=running",
            "--format", "{{.CurrentState}} {{.Image}}", f"{target.project}_{APP}",
        ).splitlines()  # fmt: skip
        # A task with a healthcheck is "Running" only once it is healthy.
        ready = [line for line in running if line.startswith("Running") and images.app in line]
        if len(ready) == replicas == len(running):
            return
    raise DeployError(f"{images.app} did not converge on {replicas} healthy tasks in time")


def swarm_current_image(target: Target) -> str | None:
    service = swarm_service(target)
    if service is None:
        return None
    image = str(service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
    return image.split("@", 1)[0]  # without the digest Swarm may pin


def swarm_status(target: Target) -> bool:
    service = swarm_service(target)
    if service is None:
        return False
    print(target.docker("stack", "services", target.project))
    update = service.get("UpdateStatus") or {}
    if update:
        print(f"  update: {update.get('State')} {update.get('Message', '')}")
    return True


def current_image(target: Target) -> str | None:
    if target.swarm:
        return swarm_current_image(target)
    containers = target.inspect(*target.app_containers())
    images = {str(c["Config"]["Image"]) for c in containers}
    return images.pop() if len(images) == 1 else None


def swarm_nodes(target: Target) -> list[Target]:
    """Engines of the other Swarm nodes (SWARM_NODES: space-separated DOCKER_HOST values):
    without a registry, every node that may run a task needs the images loaded."""
    hosts = target.settings.get("SWARM_NODES", "").split()
    return [
        Target(host, target.env_file, {**target.settings, "DOCKER_HOST": host}) for host in hosts
    ]


def engines(target: Target) -> list[Target]:
    """Every engine a deploy changes: the target's, and with Swarm the other nodes'."""
    return [target, *swarm_nodes(target)] if target.swarm else [target]


def deploy(target: Target, images: Images) -> None:
    for engine in engines(target):
        ensure_images(engine, images)
    previous = current_image(target)
    try:
        (swarm_roll_out if target.swarm else roll_out)(target, images)
    except DeployError as error:
        record(target, images.app, result="failed", commit=images.commit,
               reason=str(error)[:500], serving=previous or "nothing")  # fmt: skip
        raise
    if previous and previous != images.app:
        target.docker("tag", previous, f"{target.repository}:previous")
    target.docker("tag", images.app, f"{target.repository}:current")
    record(target, images.app, result="succeeded", commit=images.commit, serving=images.app)
    say(f"{images.app} serves {target.name}")


def status(target: Target) -> int:
    say(f"{target.name}: project {target.project} on {target.engine}")
    last = read_record(target)
    if target.swarm:
        serving = deployed = swarm_status(target)
    else:
        containers = target.inspect(*target.app_containers())
        for container in containers:
            health = health_of(container) or "-"
            print(f"  {container['Name'].lstrip('/')}: {container['Config']['Image']} {health}")
        serving = any(health_of(c) == "healthy" for c in containers)
        deployed = bool(containers)
    if not deployed and not last:
        say(f"nothing deployed: no {target.project} app and no deploy record on the target")
        return NOTHING_DEPLOYED
    if last:
        print(f"  last deploy: {last.get('result')} {last.get('commit')} at {last.get('time')}")
        if last.get("result") == "failed":
            print(f"  reason: {last.get('reason')}")
            print(f"  serving: {last.get('serving')}")
    return 0 if serving else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("environment", help="deploy/ENV.env, or a path to an env file")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--status", action="store_true", help="show what serves and the last deploy"
    )
    action.add_argument("--rollback", action="store_true", help="roll back to the previous image")
    parser.add_argument("--commit", default="HEAD", help="the revision to deploy (default HEAD)")
    args = parser.parse_args(argv)
    try:
        target = Target.load(args.environment)
        for engine in engines(target):
            engine.reach()
        if args.status:
            return status(target)
        if args.rollback:
            previous = f"{target.repository}:previous"
            if not target.has_image(previous):
                raise DeployError(f"no previous image ({previous}) on the target")
            deploy(target, Images.of(target, target.commit_of(previous)))
            return 0
        deploy(target, Images.of(target, git_hash(f"{args.commit}^{{commit}}")))
        return 0
    except DeployError as error:
        print(f"[deploy] failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
