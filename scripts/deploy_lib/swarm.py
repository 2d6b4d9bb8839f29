"""The rollout with DEPLOY_MODE=swarm: the stack, rendered from compose.yaml + compose.staging.yaml
+ compose.swarm.yaml, goes to `docker stack deploy`; Swarm rolls the update (start-first,
health-gated) and rolls it back by itself when the new tasks fail."""

import json
import secrets
import time
from typing import Any

from deploy_lib.images import Images
from deploy_lib.rollout import Rollout
from deploy_lib.target import APP, DeployError, Target, say

SWARM_ROLLED_BACK = {"rollback_completed", "rollback_paused", "paused"}
# Swarm's secrets of the stack, and the length of each (compose's secrets service makes the
# same two on a plain compose host).
SWARM_SECRETS = {"db_password": 30, "backup_key": 48}


class SwarmRollout(Rollout):
    def engines(self) -> list[Target]:
        """The manager, and the other nodes (SWARM_NODES: space-separated DOCKER_HOST values):
        without a registry, every node that may run a task needs the images loaded."""
        hosts = self.target.settings.get("SWARM_NODES", "").split()
        return [self.target, *(self.target.on(host) for host in hosts)]

    def roll_out(self, images: Images) -> None:
        target = self.target
        ensure_swarm_secrets(target)
        say(f"docker stack deploy {target.project} with {images.app}")
        target.docker(
            "stack", "deploy", "--compose-file", "-", target.project,
            stdin=render_stack(target, images),
        )  # fmt: skip
        deadline = time.monotonic() + 2 * float(target.settings["DEPLOY_HEALTH_TIMEOUT"])
        replicas = int(target.settings["APP_REPLICAS"])
        while time.monotonic() < deadline:
            time.sleep(2)
            service = self.app_service()
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

    def app_service(self) -> dict[str, Any] | None:
        raw = self.target.docker("service", "inspect", f"{self.target.project}_{APP}", check=False)
        found: list[dict[str, Any]] = json.loads(raw) if raw else []
        return found[0] if found else None

    def current_image(self) -> str | None:
        service = self.app_service()
        if service is None:
            return None
        image = str(service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
        return image.split("@", 1)[0]  # without the digest Swarm may pin

    def show(self) -> tuple[bool, bool]:
        service = self.app_service()
        if service is None:
            return False, False
        print(self.target.docker("stack", "services", self.target.project))
        update = service.get("UpdateStatus") or {}
        if update:
            print(f"  update: {update.get('State')} {update.get('Message', '')}")
        return True, True


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


def ensure_swarm_secrets(target: Target) -> None:
    """The database password and the backup repository's key, each created once in Swarm's
    secret store (never on disk here)."""
    for secret, length in SWARM_SECRETS.items():
        name = f"{target.project}_{secret}"
        if target.succeeds("secret", "inspect", name):
            continue
        say(f"creating the secret {name}")
        target.docker("secret", "create", name, "-", stdin=secrets.token_urlsafe(length))
