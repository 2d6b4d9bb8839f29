"""One environment (an env file) and the Docker engine it lives on: every docker and compose
call of the deploy goes through Target."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack_facts import EnvFileError, config_env, ps_filters, read_env_file

if TYPE_CHECKING:
    from deploy_lib.images import Images

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("compose.yaml", "compose.staging.yaml")
SWARM_FILES = (*COMPOSE_FILES, "compose.swarm.yaml")
APP = "app"
EDGE = "proxy"
# An env file names its target's engine with one of these (docker's own variables).
TARGET_KEYS = ("DOCKER_HOST", "DOCKER_CONTEXT")
# docker's ssh transport gives ssh a 30 s ConnectTimeout; this bounds the whole check.
REACH_TIMEOUT_SECONDS = 60
# Where the docker CLI's "error during connect" quotes ssh's own error output.
SSH_STDERR = "stderr="
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
        try:
            settings = {**DEFAULTS, **read_env_file(path)}
        except EnvFileError as error:
            raise DeployError(str(error)) from None
        settings.setdefault("COMPOSE_PROJECT_NAME", f"service-{path.stem}")
        names_engine = any(settings.get(key) for key in TARGET_KEYS)
        if not names_engine and settings.get("DEPLOY_LOCAL_ENGINE") != "yes":
            raise DeployError(
                f"{path} names no target: set DOCKER_HOST=ssh://deploy@your-host (or "
                "DOCKER_CONTEXT) as README's runbook says (step 3); to deploy to this "
                "machine's own engine, set DEPLOY_LOCAL_ENGINE=yes"
            )
        return cls(path.stem, path.resolve(), settings)

    def on(self, host: str) -> Target:
        """The same environment on another engine (a Swarm node)."""
        return Target(host, self.env_file, {**self.settings, "DOCKER_HOST": host})

    def local(self) -> Target:
        """The engine this machine's docker CLI reaches without the target's host or context."""
        settings = {k: v for k, v in self.settings.items() if k not in TARGET_KEYS}
        return Target("local", self.env_file, settings)

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

    # --- docker and compose calls -----------------------------------------------------------
    def docker_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **extra}
        for key in TARGET_KEYS:
            if self.settings.get(key):
                env[key] = self.settings[key]
        return env

    def run(
        self, *args: str, stdin: str | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` on this engine, its output captured, whatever its exit status."""
        return subprocess.run(
            ["docker", *args], env=self.docker_env(), capture_output=True, text=True,
            input=stdin, timeout=timeout,
        )  # fmt: skip

    def docker(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        if check and result.returncode != 0:
            raise DeployError(f"docker {' '.join(args[:3])}: {result.stderr.strip()}")
        return result.stdout.strip()

    def succeeds(self, *args: str) -> bool:
        return self.run(*args).returncode == 0

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

    def reach(self) -> None:
        """Fails unless the target's engine answers: an SSH host that is down, refuses the
        key, or presents a host key that does not match known_hosts."""
        try:
            result = self.run("info", "--format", "{{.ID}}", timeout=REACH_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            reason = f"no answer within {REACH_TIMEOUT_SECONDS} s"
        else:
            if result.returncode == 0 and result.stdout.strip():
                return
            reason = result.stderr.strip() or result.stdout.strip()
            # The CLI wraps what ssh said ("Host key verification failed.") in its own words.
            reason = reason.rpartition(SSH_STDERR)[2].strip() or reason
        raise DeployError(f"cannot reach the Docker engine at {self.engine}: {reason}")

    # --- what runs --------------------------------------------------------------------------
    def running(self, service: str) -> list[str]:
        return self.docker("ps", "--quiet", *ps_filters(self.project, service)).split()

    def inspect(self, *ids: str) -> list[dict[str, Any]]:
        if not ids:
            return []
        inspected: list[dict[str, Any]] = json.loads(self.docker("inspect", *ids))
        return inspected

    def has_image(self, image: str) -> bool:
        return self.succeeds("image", "inspect", image)

    def commit_of(self, image: str) -> str:
        """The commit an image was built from (its APP_VERSION)."""
        env = self.docker("image", "inspect", "--format", "{{json .Config.Env}}", image)
        variables = config_env(json.loads(env))
        if "APP_VERSION" in variables:
            return variables["APP_VERSION"]
        raise DeployError(f"{image} has no APP_VERSION: not built by scripts/deploy")

    def engine_id(self) -> str:
        return self.docker("info", "--format", "{{.ID}}")
