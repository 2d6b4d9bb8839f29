"""What scripts/deploy knows of the edge is what caddy/Caddyfile and caddy/run-edge say: the
timings its waits are built on, and the file a reload replaces."""

import re

from deploy_lib import compose
from tests.project import ROOT

CADDYFILE = (ROOT / "caddy" / "Caddyfile").read_text()


def caddy_seconds(pattern: str) -> float:
    """A Caddyfile duration in whole seconds, found by a pattern whose group is its number."""
    found = re.findall(pattern, CADDYFILE)
    assert len(found) == 1, f"{pattern!r} found {len(found)} times in caddy/Caddyfile"
    return float(found[0])


def test_the_deploy_waits_on_the_caddyfile_timings() -> None:
    assert caddy_seconds(r"\n\t\trefresh (\d+)s\n") == compose.CADDY_DNS_REFRESH_SECONDS
    assert caddy_seconds(r"\n\t\tdial_timeout (\d+)s\n") == compose.CADDY_DIAL_TIMEOUT_SECONDS


def test_the_running_caddyfile_is_the_one_run_edge_starts() -> None:
    run_edge = (ROOT / "caddy" / "run-edge").read_text()
    assert f'running="{compose.RUNNING_CADDYFILE}"' in run_edge
