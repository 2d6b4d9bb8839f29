"""The timings that carry the stack's promise of no failed request across SIGTERM, deploys and
restarts, read from the files that set them: hypercorn.toml, caddy/Caddyfile, the compose
files, .env.example and the app's defaults. Each row of TIMINGS is one inequality between two
of them, named by its id, so that a failure says which promise an edit broke. No Docker."""

import re
from typing import Any

import pytest
import yaml

from deploy_lib.target import COMPOSE_FILES, SWARM_FILES
from service.api.jobs import MAX_WAIT_SECONDS
from service.settings import Settings
from stack_facts import read_env_file
from tests.project import HYPERCORN, ROOT

CADDYFILE = (ROOT / "caddy" / "Caddyfile").read_text()
ENV_EXAMPLE = read_env_file(ROOT / ".env.example")
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
GO_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
CADDY_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2}
# Go's HTTP/1 server reads this much beyond max_header_size before it answers 431.
GO_HEADER_READ_SLACK = 4096
# What Caddy adds to a request head on its way to the app: X-Request-ID, X-Client-Protocol,
# X-Forwarded-For/-Proto/-Host, Via and, with tracing, traceparent (about 600 bytes at most).
CADDY_ADDED_HEADERS = 1024


class ComposeLoader(yaml.SafeLoader):
    """Compose files, whose merge tags (!reset, !override) are read as the value they carry:
    which files set a timing is all these tests ask of the merge."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.ScalarNode), node
    return loader.construct_scalar(node)


ComposeLoader.add_multi_constructor("!", _untagged)


def seconds(duration: str) -> float:
    """A Go duration (Caddy's and compose's syntax: 90s, 2m, 1m40s) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * GO_DURATION_UNITS[unit] for number, unit in parts)


def caddy_argument(directive: str) -> str:
    """The argument of a Caddyfile directive that stands on one line, once in the file."""
    found = re.findall(rf"^\s*{directive}\s+(\S+)\s*$", CADDYFILE, re.MULTILINE)
    assert len(found) == 1, f"{directive}: {len(found)} lines in caddy/Caddyfile, not 1"
    return str(found[0])


def caddy_bytes(directive: str) -> int:
    """A Caddyfile size (8KiB, 1MB) in bytes."""
    size = re.fullmatch(r"(\d+)([KM]i?B|B)?", caddy_argument(directive))
    assert size, f"{directive}: not a size"
    number, unit = size.groups(default="")
    return int(number) * CADDY_SIZE_UNITS[unit]


def caddy_uri_limit() -> int:
    found = re.findall(r"size\(\{uri\}\) > (\d+)", CADDYFILE)
    assert len(found) == 1, f"the URI limit: {len(found)} in caddy/Caddyfile, not 1"
    return int(found[0])


def stop_grace_period(service: str, files: tuple[str, ...]) -> float:
    """The service's stop_grace_period as compose merges these files: the last one to set it."""
    periods = []
    for name in files:
        compose = yaml.load((ROOT / name).read_text(), ComposeLoader)
        settings = (compose.get("services") or {}).get(service) or {}
        if "stop_grace_period" in settings:
            periods.append(str(settings["stop_grace_period"]))
    assert periods, f"{service}: no stop_grace_period in {files} (Docker's 10 s drains nothing)"
    return seconds(periods[-1])


def app_drain() -> float:
    """The longest an app replica takes from SIGTERM to exit (service/server.py)."""
    return float(
        DEFAULTS["lame_duck_seconds"]
        + HYPERCORN["graceful_timeout"]
        + HYPERCORN["shutdown_timeout"]
    )


CADDY_KEEPALIVE = seconds(caddy_argument("keepalive"))
CADDY_HEAD_LIMIT = caddy_bytes("max_header_size") + GO_HEADER_READ_SLACK
BENCH_UVICORN_KEEPALIVE = float(
    re.findall(r"--timeout-keep-alive=(\d+)", (ROOT / "compose.bench.yaml").read_text())[0]
)

# Plain compose, scripts/deploy's compose mode, and its Swarm mode.
STACKS = {"compose": ("compose.yaml",), "deploy": COMPOSE_FILES, "Swarm": SWARM_FILES}
# (smaller, larger): each row's first value must stay below its second.
TIMINGS = [
    # A drain lets every in-flight request finish, and Caddy never cuts what the app still sends.
    pytest.param(
        MAX_WAIT_SECONDS, HYPERCORN["graceful_timeout"], id="longest long-poll < graceful_timeout"
    ),
    pytest.param(
        HYPERCORN["graceful_timeout"],
        seconds(caddy_argument("write")),
        id="graceful_timeout < Caddy's write timeout",
    ),
    *(
        pytest.param(
            app_drain(),
            stop_grace_period("app", files),
            id=f"lame duck + graceful_timeout + shutdown_timeout < app stop_grace_period ({stack})",
        )
        for stack, files in STACKS.items()
    ),
    *(
        pytest.param(
            seconds(caddy_argument("grace_period")),
            stop_grace_period("proxy", files),
            id=f"Caddy's grace_period < proxy stop_grace_period ({stack})",
        )
        for stack, files in STACKS.items()
    ),
    # Caddy closes the connections it leaves idle before the app does, so it never sends a
    # request on one the app is closing.
    pytest.param(
        CADDY_KEEPALIVE, DEFAULTS["lame_duck_seconds"], id="Caddy's upstream keepalive < lame duck"
    ),
    pytest.param(
        CADDY_KEEPALIVE,
        HYPERCORN["keep_alive_timeout"],
        id="Caddy's upstream keepalive < Hypercorn's keep_alive_timeout",
    ),
    pytest.param(
        CADDY_KEEPALIVE,
        BENCH_UVICORN_KEEPALIVE,
        id="Caddy's upstream keepalive < the bench's uvicorn --timeout-keep-alive",
    ),
    # An oversized request head is answered by the edge (431, 414), never half-way at the app.
    pytest.param(
        CADDY_HEAD_LIMIT + CADDY_ADDED_HEADERS,
        HYPERCORN["h11_max_incomplete_size"],
        id="Caddy's request head limit + its headers < Hypercorn's h11_max_incomplete_size",
    ),
    pytest.param(
        caddy_uri_limit(), CADDY_HEAD_LIMIT, id="Caddy's URI limit < its request head limit"
    ),
    # A stalled request body gets the app's 408 (service/middleware.py), not Caddy's timeout.
    pytest.param(
        DEFAULTS["request_body_timeout"],
        seconds(caddy_argument("read_body")),
        id="APP_REQUEST_BODY_TIMEOUT < Caddy's read_body",
    ),
]


@pytest.mark.parametrize(("smaller", "larger"), TIMINGS)
def test_timing(smaller: float, larger: float) -> None:
    assert smaller < larger


def test_graceful_timeout_has_one_value() -> None:
    """Compose passes GRACEFUL_TIMEOUT over hypercorn.toml's graceful_timeout, and compose
    cannot add: its defaults and .env.example's must be the value the rows above check."""
    copies = [
        (path.name, float(default))
        for path in sorted(ROOT.glob("compose*.yaml"))
        for default in re.findall(r"\$\{GRACEFUL_TIMEOUT:-([\d.]+)\}", path.read_text())
    ]
    assert "compose.yaml" in dict(copies), "compose.yaml no longer passes GRACEFUL_TIMEOUT"
    copies.append((".env.example", float(ENV_EXAMPLE["GRACEFUL_TIMEOUT"])))
    assert {value for _, value in copies} == {HYPERCORN["graceful_timeout"]}, copies
