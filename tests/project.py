"""The repository under test, as both test suites read it."""

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# hypercorn.toml as the image runs it (compose.yaml may override graceful_timeout only).
HYPERCORN = tomllib.loads((ROOT / "hypercorn.toml").read_text())


def render_compose(*files: str, env_file: Path | None = None) -> dict[str, Any]:
    """`docker compose config` of these files, as JSON. Only the env file speaks: none of the
    caller's APP_*, OTEL_* or compose variables. Needs the compose plugin, not an engine."""
    options = [f"--env-file={env_file}"] if env_file else []
    for name in files:
        options += ["-f", name]
    done = subprocess.run(
        ["docker", "compose", *options, "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config
