"""--baseline REF: the app image built from another commit, to compare this checkout's app with
REF's in one run (compose.baseline.yaml serves it behind its own Caddy from this checkout)."""

import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench_lib.stack import ROOT, Progress

OVERLAY = ROOT / "compose.baseline.yaml"
IMAGE_REPOSITORY = "service"


@dataclass(frozen=True)
class Baseline:
    ref: str  # as given (or chosen: the previous release tag, else HEAD~1)
    commit: str  # the full sha it resolved to
    image: str  # service:bench-baseline-<sha12>

    @property
    def sha12(self) -> str:
        return self.commit[:12]

    @property
    def server(self) -> str:
        return f"hypercorn@{self.sha12}"

    def to_json(self) -> dict[str, str]:
        return {"ref": self.ref, "commit": self.commit, "sha12": self.sha12, "image": self.image}


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def default_ref() -> str:
    """The previous release tag when there is one, else the commit before HEAD."""
    described = _git("describe", "--tags", "--abbrev=0", "HEAD^")
    return described.stdout.strip() if described.returncode == 0 else "HEAD~1"


def resolve(ref: str | None) -> Baseline:
    ref = ref or default_ref()
    done = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode or not done.stdout.strip():
        raise SystemExit(f"scripts/bench: --baseline {ref}: not a commit in this repository")
    commit = done.stdout.strip()
    return Baseline(ref, commit, f"{IMAGE_REPOSITORY}:bench-baseline-{commit[:12]}")


def _image_exists(image: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return done.returncode == 0


def build(baseline: Baseline, progress: Progress) -> None:
    """REF's app image, from its own Dockerfile, with the classic builder (what CI has). Tagged
    by commit: a second run reuses it. The base image is the same python:3.13-slim as the
    stack's, so pip and uv trust what they trust there (scripts/offline-images bakes the
    host's extra CA into it): no CA is passed here, as none is for the stack's own build."""
    if _image_exists(baseline.image):
        progress.note(f"baseline {baseline.ref} ({baseline.sha12}): reusing {baseline.image}")
        return
    progress.note(f"baseline {baseline.ref} ({baseline.sha12}): building {baseline.image}")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", baseline.commit],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        raise SystemExit(f"scripts/bench: git archive {baseline.commit}: {archive.stderr!r}")
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as checkout:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(checkout, filter="data")
        if not (Path(checkout) / "Dockerfile").is_file():
            raise SystemExit(f"scripts/bench: {baseline.ref} has no Dockerfile")
        done = subprocess.run(
            [
                "docker",
                "build",
                "--tag",
                baseline.image,
                "--build-arg",
                f"VERSION={baseline.sha12}",
                checkout,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=os.environ | {"DOCKER_BUILDKIT": "0"},
        )
    if done.returncode:
        output = (done.stdout + done.stderr)[-4000:]
        raise SystemExit(f"scripts/bench: building {baseline.image} failed:\n{output}")
