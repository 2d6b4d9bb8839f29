"""The repository under test, as both test suites read it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# hypercorn.toml as the image runs it (compose.yaml may override graceful_timeout only).
HYPERCORN = tomllib.loads((ROOT / "hypercorn.toml").read_text())


def read_env(path: Path) -> dict[str, str]:
    """An env file as compose reads it: KEY=VALUE lines, # comments."""
    lines = (line.strip() for line in path.read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
