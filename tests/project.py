"""The repository under test, as both test suites read it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# hypercorn.toml as the image runs it (compose.yaml may override graceful_timeout only).
HYPERCORN = tomllib.loads((ROOT / "hypercorn.toml").read_text())
