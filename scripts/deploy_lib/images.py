"""What a commit deploys, built here from `git archive` and sent to engines that lack it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from deploy_lib.target import ROOT, DeployError, Target, say


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
            say(f"{image} is already on {target.engine}")
        else:
            missing.append((image, tree, arguments))
    if not missing:
        return
    local = target.local()
    same_engine = local.engine_id() == target.engine_id()
    for image, tree, arguments in missing:
        if not local.has_image(image):
            build(local, image, tree, arguments)
        if not same_engine:
            ship(local, target, image)


def ship(local: Target, target: Target, image: str) -> None:
    say(f"sending {image} to {target.engine} (docker save | docker load)")
    save = subprocess.Popen(
        ["docker", "save", image], env=local.docker_env(), stdout=subprocess.PIPE
    )
    loaded = subprocess.run(
        ["docker", "load", "--quiet"], stdin=save.stdout, env=target.docker_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    if save.wait() != 0 or loaded.returncode != 0:
        raise DeployError(f"transfer failed: {loaded.stderr.strip()}")
