"""The rollout on one engine with plain compose: the new replicas start beside the old ones,
and the old ones stop once the new ones are healthy and in Caddy's upstream set."""

import time

from deploy_lib.images import Images
from deploy_lib.restore_point import take_restore_point
from deploy_lib.rollout import Rollout
from deploy_lib.target import APP, EDGE, DeployError, Target, say
from stack_facts import eventually, health_of

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


class ComposeRollout(Rollout):
    def roll_out(self, images: Images) -> None:
        target = self.target
        replicas = int(target.settings["APP_REPLICAS"])
        old = target.running(APP)
        # The database and its backups first (a no-op when they run), then the app, the edge.
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
        new = [c for c in target.running(APP) if c not in old]
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

    def current_image(self) -> str | None:
        containers = self.target.inspect(*self.target.running(APP))
        images = {str(c["Config"]["Image"]) for c in containers}
        return images.pop() if len(images) == 1 else None

    def show(self) -> tuple[bool, bool]:
        containers = self.target.inspect(*self.target.running(APP))
        for container in containers:
            health = health_of(container) or "-"
            print(f"  {container['Name'].lstrip('/')}: {container['Config']['Image']} {health}")
        return bool(containers), any(health_of(c) == "healthy" for c in containers)


def wait_healthy(target: Target, containers: list[str], timeout: float) -> str | None:
    """None when all are healthy, else why not. A replica that exits while starting (a failed
    migration, a setting the app refuses) fails the rollout at once: each restart would try
    again, and its migration would again hold the requests on its table for lock_timeout."""
    exits: list[str] = []  # how each replica that exited while starting did
    states: dict[str, str] = {}  # container id -> its health status

    def settled() -> bool:
        inspected = target.inspect(*containers)
        exits[:] = [
            f"{c['Id'][:12]} restarted {c['RestartCount']} times"
            if c["RestartCount"]
            else f"{c['Id'][:12]} {c['State']['Status']}, exit {c['State']['ExitCode']}"
            for c in inspected
            if c["RestartCount"] or c["State"]["Status"] != "running"
        ]
        states.update({c["Id"]: health_of(c) for c in inspected})
        return bool(exits) or all(state == "healthy" for state in states.values())

    if not eventually(settled, timeout, interval=1):
        summary = ", ".join(f"{c[:12]} {s or 'no health status'}" for c, s in states.items())
        return f"not healthy within {timeout:.0f} s ({summary})"
    return f"exited while starting ({', '.join(exits)})" if exits else None


def stop(target: Target, containers: list[str]) -> None:
    if containers:
        # No --time: each container's own stop timeout (compose.yaml's stop_grace_period, which
        # covers the lame duck, graceful_timeout and shutdown_timeout) applies.
        target.docker("stop", *containers)
        target.docker("rm", *containers)


def print_last_logs(target: Target, containers: list[str], lines: int = 20) -> None:
    """What failed replicas logged last, before they are removed: why they did not start (a
    migration's error, a setting the app refused)."""
    for container in containers:
        logs = target.run("logs", "--tail", str(lines), container)
        say(f"the last {lines} log lines of {container[:12]}:")
        print((logs.stdout + logs.stderr).rstrip(), flush=True)


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
