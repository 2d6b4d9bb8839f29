"""What scripts/deploy knows of the edge is what caddy/Caddyfile and compose.yaml say: the
timings its waits are built on, and the file that drains the edge before a reload."""

import importlib.util
import json
import re
import subprocess
import sys
from types import ModuleType

from tests.project import ROOT

CADDYFILE = (ROOT / "caddy" / "Caddyfile").read_text()


def load_deploy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy", ROOT / "scripts" / "deploy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


deploy = load_deploy()


def caddy_seconds(pattern: str) -> float:
    """A Caddyfile duration in whole seconds, found by a pattern whose group is its number."""
    found = re.findall(pattern, CADDYFILE)
    assert len(found) == 1, f"{pattern!r} found {len(found)} times in caddy/Caddyfile"
    return float(found[0])


def test_the_deploy_waits_on_the_caddyfile_timings() -> None:
    assert caddy_seconds(r"\n\t\trefresh (\d+)s\n") == deploy.CADDY_DNS_REFRESH_SECONDS
    assert caddy_seconds(r"\n\t\tdial_timeout (\d+)s\n") == deploy.CADDY_DIAL_TIMEOUT_SECONDS
    settle = deploy.CADDY_DNS_REFRESH_SECONDS + deploy.CADDY_DIAL_TIMEOUT_SECONDS
    assert settle < deploy.EDGE_DRAIN_SECONDS


def test_the_drain_flag_is_the_file_the_caddyfile_matches_in_a_tmpfs() -> None:
    directory, name = deploy.EDGE_DRAINING_FLAG.rsplit("/", 1)
    matcher = re.search(r"@edge_draining \{\n(.*?)\n\t\}\n", CADDYFILE, re.DOTALL)
    assert matcher is not None, "caddy/Caddyfile has no @edge_draining matcher"
    assert f"root {directory}\n" in matcher.group(1)
    assert f"try_files /{name}\n" in matcher.group(1)
    assert "header @edge_draining Connection close" in CADDYFILE
    # A restarted edge must not come back draining: the flag lives in a tmpfs.
    rendered = subprocess.run(
        ["docker", "compose", "--env-file", ".env.example", "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert directory in json.loads(rendered.stdout)["services"][deploy.EDGE]["tmpfs"]
