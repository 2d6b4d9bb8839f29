"""scripts/bench: load-test the stack and report honest, comparable figures."""

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench_lib import baseline, environment, loadgen, plan, report
from bench_lib.model import summarise
from bench_lib.runner import H2_STREAMS_PER_CONNECTION, Context, run_plan, soak
from bench_lib.scenarios import SCENARIOS, authorization, seed_item
from bench_lib.stack import (
    DEFAULT_ENV,
    KEY_SCOPES,
    ROOT,
    Compose,
    CpuPinning,
    Progress,
    project_containers,
)
from stack_facts import eventually, read_env_file

SEED_ITEMS = 200
KEY_VARIABLE = "BENCH_API_KEY"  # --url: the running stack's key (not an option: argv is public)
# A soak: enough connections to hold --rate, and about SOAK_WINDOWS windows of SOAK_WINDOW_S
# (5-30 s each): short enough to show a drift over the run, long enough for a steady rate.
SOAK_CONNECTIONS = 16
SOAK_WINDOWS = 20
SOAK_WINDOW_S = (5.0, 30.0)
EPILOG = """
examples:
  scripts/bench                      full run (~11 min): starts its own stack, stops it after
  scripts/bench --quick              about 2.5 minutes (what CI runs)
  scripts/bench --pin                stack on CPUs 0..n-2, the generator on the last CPU
                                     (its container's --cpuset-cpus)
  scripts/bench --soak 30m           the mixed scenario at a steady rate for 30 minutes
  scripts/bench --quick --baseline v1.2.0
                                     also REF's app (its image built from that commit, behind
                                     a Caddy built from this checkout): HEAD/REF ratios
  scripts/bench --baseline           REF = the previous release tag, else HEAD~1
  BENCH_API_KEY=svc_... scripts/bench --url https://localhost --ca-file caddy-root.crt
                                     an already running stack (Caddy paths only, plus
                                     --direct-url http://127.0.0.1:8000 if the app is published),
                                     with a key of every scope of that stack (python -m
                                     service.keys create ...)

Every request sends an API key (Authorization: Bearer): on its own stack the bench makes one
with python -m service.keys create in the app container; the key is in no output, its name is.
The auth group prices it: GET /items/{id} with the key cached, uncached, and public reads.

outputs (--out, default bench-results/<time>/): results.json, report.md, chart.png.
Exit status: 0 when every request succeeded, 1 when any failed, 2 on a usage or setup error.
Load goes to loopback (127.0.0.0/8) only.
Needs Docker and uv only: wrk and h2load run in the tools image (`docker run --network host`),
which scripts/tools-image builds on first use.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Load-test the stack (Caddy -> Hypercorn -> FastAPI -> Postgres) with wrk "
        "and h2load, run from the project's tools image (tools/Dockerfile); compare paths, "
        "protocols, peer servers and ceilings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one short round (~2.5 min)")
    mode.add_argument(
        "--soak", metavar="DURATION", help="steady-rate mixed load, e.g. 90s, 30m, 2h"
    )
    parser.add_argument("--rate", type=float, default=200, help="--soak requests/s (default 200)")
    parser.add_argument("--url", help="target this running stack's Caddy (https://host:port)")
    parser.add_argument("--direct-url", help="with --url: the app published directly (http)")
    parser.add_argument("--ca-file", type=Path, help="with --url: Caddy's root certificate")
    parser.add_argument(
        "--project",
        help="compose project: the bench's own (default from the env file) or, with "
        "--url, the running one (docker stats, --pin, its CA)",
    )
    parser.add_argument(
        "--env-file", type=Path, default=DEFAULT_ENV, help="compose variables for the bench stack"
    )
    parser.add_argument(
        "-f",
        "--compose-file",
        type=Path,
        action="append",
        default=[],
        help="another overlay on top of compose.bench.yaml (experiments); repeatable",
    )
    parser.add_argument(
        "--baseline",
        nargs="?",
        const="",
        metavar="REF",
        help="also run REF's app (a git revision; without a value the previous release tag, "
        "else HEAD~1): its image (service:bench-baseline-<sha12>, kept for the next run) "
        "served like the stack's app behind its own Caddy from this checkout, and the "
        "HEAD/REF ratios of GET /items/{id} via Caddy (HTTP/2): throughput, p99, requests "
        "per app-CPU-second. Its app shares the stack's database: REF's migrations must be "
        "a prefix of HEAD's",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the bench stack running")
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--pin", action="store_true", help="pin the stack and the generator")
    parser.add_argument("--scenarios", help=f"subset of {','.join(SCENARIOS)}")
    parser.add_argument("--groups", help=f"subset of {','.join(plan.GROUPS)}")
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--repetitions", type=int, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, help="requests in flight")
    return parser.parse_args(argv)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise SystemExit(f"scripts/bench: not a duration: {text!r} (e.g. 90s, 30m, 2h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _loopback_port(url: str) -> tuple[str, int]:
    """Load only ever goes to this machine: refuse a URL that does not resolve to loopback."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise SystemExit(f"scripts/bench: no host in {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for *_, address in socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP):
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise SystemExit(f"scripts/bench: {url} is not on loopback; load stays on 127.0.0.0/8")
    return parts.hostname, port


def _profile(args: argparse.Namespace) -> plan.Profile:
    base = plan.QUICK if args.quick else plan.FULL
    return plan.Profile(
        duration=args.duration or base.duration,
        warmup=base.warmup,
        repetitions=args.repetitions or base.repetitions,
        concurrency=args.concurrency or base.concurrency,
        sweep=base.sweep,
        peer_scenarios=base.peer_scenarios,
    )


def _soak_window(total_s: float) -> float:
    shortest, longest = SOAK_WINDOW_S
    return min(longest, max(shortest, total_s / SOAK_WINDOWS))


def _subset(text: str | None, known: tuple[str, ...], what: str) -> list[str]:
    chosen = text.split(",") if text else list(known)
    unknown = set(chosen) - set(known)
    if unknown:
        raise SystemExit(f"scripts/bench: unknown {what}: {', '.join(sorted(unknown))}")
    return chosen


def _wait_ready(client: httpx.Client, within: float = 60) -> None:
    """Healthy containers are not yet a serving path: wait for /readyz through Caddy."""

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    if not eventually(ready, within, interval=1):
        raise RuntimeError(f"{client.base_url}readyz never answered 200 within {within} s")


def _seed(base_url: str, ca_file: str, api_key: str, progress: Progress) -> list[int]:
    """Items to read and list, written through the API like any client would."""
    progress.note(f"seeding {SEED_ITEMS} items through {base_url}")
    run_id = uuid.uuid4().hex[:8]
    ids = []
    headers = {"authorization": authorization(api_key)}
    with httpx.Client(base_url=base_url, verify=ca_file, timeout=30, headers=headers) as client:
        _wait_ready(client)
        for number in range(SEED_ITEMS):
            response = client.post(
                "/items",
                content=seed_item(number, run_id),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            ids.append(int(response.json()["id"]))
    return ids


@contextlib.contextmanager
def _own_stack(
    args: argparse.Namespace, progress: Progress, ref: baseline.Baseline | None
) -> Iterator[Compose]:
    project = args.project or read_env_file(args.env_file).get(
        "COMPOSE_PROJECT_NAME", "service-bench"
    )
    compose = Compose(project, args.env_file, list(args.compose_file))
    if ref:
        # Before any -f of the caller's: their experiments may override the baseline too.
        compose.extra_files.insert(0, baseline.OVERLAY)
        compose.variables["BASELINE_IMAGE"] = ref.image
    compose.down()  # a stack left by an interrupted run would carry its data into this one
    try:
        # A soak needs only the stack itself; a bench run also needs the peers and ceilings.
        compose.up(progress, ["proxy"] if args.soak else [])
        yield compose
    finally:
        if args.keep_stack:
            progress.note(f"leaving the stack running: docker compose -p {project} ... down -v")
        else:
            progress.note("stopping the stack")
            compose.down()


def _stop(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: the running generator is killed, the bench stack stopped."""
    raise KeyboardInterrupt


@dataclass(frozen=True)
class ServedStack:
    """What the bench measures: where the stack answers, and the key it sends."""

    host: str
    ports: dict[str, int]  # compose service -> its published port on host
    project: str | None  # its compose project, when known: the containers to watch
    ca_file: Path
    api_key: str
    key_name: str  # what the outputs say of the key


def _resolve_stack(
    args: argparse.Namespace,
    progress: Progress,
    ref: baseline.Baseline | None,
    workdir: Path,
    stack: contextlib.ExitStack,
) -> ServedStack:
    """--url: the running stack it names; else the bench's own, started (and, on leaving
    `stack`, stopped) here."""
    ca_file = workdir / "caddy-root.crt"
    if args.url:
        api_key = os.environ.get(KEY_VARIABLE, "")
        if not api_key:
            raise SystemExit(f"scripts/bench: --url needs an API key in ${KEY_VARIABLE}")
        host, port = _loopback_port(args.url)
        ports = {"proxy": port}
        if args.direct_url:
            ports["app"] = _loopback_port(args.direct_url)[1]
        if args.ca_file:
            ca_file = args.ca_file
        elif args.project:
            environment.copy_ca_from_project(args.project, ca_file)
        else:
            raise SystemExit("scripts/bench: --url needs --ca-file or --project (for the CA)")
        return ServedStack(host, ports, args.project, ca_file, api_key, f"${KEY_VARIABLE}")
    if ref:
        baseline.build(ref, progress)
    compose = stack.enter_context(_own_stack(args, progress, ref))
    compose.copy_ca(ca_file)
    key_name = f"bench-{uuid.uuid4().hex[:8]}"
    progress.note(f"making API key {key_name} (python -m service.keys create in app)")
    api_key = compose.create_key(key_name)
    ports = compose.published_ports()
    return ServedStack("localhost", ports, compose.project, ca_file, api_key, key_name)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    args = parse_args(argv)
    progress = Progress()
    try:
        tools = loadgen.Tools.find()
    except loadgen.ToolsUnavailable as error:
        print(f"scripts/bench: {error}", file=sys.stderr)
        return 2
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("scripts/bench: --pin needs at least two CPUs")
    ref = None
    if args.baseline is not None:
        if args.url or args.soak:
            raise SystemExit("scripts/bench: --baseline needs the bench's own stack, no --soak")
        ref = baseline.resolve(args.baseline)
    started = datetime.datetime.now(datetime.UTC)
    out = args.out or ROOT / "bench-results" / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        served = _resolve_stack(args, progress, ref, Path(workdir), stack)
        context = _context(args, tools, served, progress, stack)
        progress.note("recording the environment")
        env = environment.collect(tools, context.containers)
        names = {s: f"{served.project}-{s}-1" for s in ("proxy", "app")} if served.project else {}
        inside = {s: name for s, name in names.items() if name in context.containers}
        available = plan.targets(served.ports, served.host, ref.server if ref else "", inside)
        document = _measure_all(args, context, available, started, env, served.key_name, ref)
    return _write_outputs(document, out)


def _context(
    args: argparse.Namespace,
    tools: loadgen.Tools,
    served: ServedStack,
    progress: Progress,
    stack: contextlib.ExitStack,
) -> Context:
    """What every measured run needs: the seeded items, the key, the containers to watch, and
    (--pin) the stack on CPUs of its own until `stack` is left."""
    containers = project_containers(served.project) if served.project else {}
    generator_cpu = None
    if args.pin:
        cpus = os.cpu_count() or 2
        generator_cpu = cpus - 1
        stack.enter_context(CpuPinning(containers, f"0-{cpus - 2}"))
    base_url = f"https://{served.host}:{served.ports['proxy']}"
    item_ids = _seed(base_url, str(served.ca_file), served.api_key, progress)
    return Context(
        tools, item_ids, served.api_key, str(served.ca_file), containers, generator_cpu, progress
    )


def _write_outputs(document: dict[str, Any], out: Path) -> int:
    """results.json, report.md, chart.png and the terminal table; the exit status: 1 when a
    request failed or none completed (saturation is only reported), else 0."""
    report.write_json(out / "results.json", document)
    chart_name = None
    if document["cells"]:
        report.chart(document["cells"], out / "chart.png")
        chart_name = "chart.png"
    (out / "report.md").write_text(report.markdown(document, chart_name))
    if document["cells"]:
        print(
            report.terminal_table(
                document["cells"], document["goals"], document["baseline"], document["auth"]
            )
        )
    if document.get("soak"):
        print(f"soak: {json.dumps(document['soak']['summary'])}")
    chart_note = f", chart: {out}/{chart_name}" if chart_name else ""
    print(f"\nresults: {out}/results.json, report: {out}/report.md{chart_note}")
    summaries = [cell["summary"] for cell in document["cells"]]
    if document.get("soak"):
        summaries.append(document["soak"]["summary"])
    broken = any(s["failed"] or "no request completed" in s["invalid_reasons"] for s in summaries)
    return 1 if broken else 0


def _measure_all(
    args: argparse.Namespace,
    context: Context,
    available: dict[str, plan.Target],
    started: datetime.datetime,
    env: dict[str, Any],
    key_name: str,
    ref: baseline.Baseline | None = None,
) -> dict[str, Any]:
    profile = _profile(args)
    settings: dict[str, Any] = {
        "command": shlex.join(["scripts/bench", *sys.argv[1:]]),
        "pin": args.pin,
        "generator_cpu": context.generator_cpu,
        "duration_s": profile.duration,
        "warmup_s": profile.warmup,
        "repetitions": profile.repetitions,
        "concurrency": profile.concurrency,
        "h2_streams_per_connection": H2_STREAMS_PER_CONNECTION,
        "seeded_items": len(context.item_ids),
        "baseline": ref.to_json() if ref else None,
        # Its name only: the key itself is a secret, in no output.
        "api_key": {"name": key_name, "scopes": list(KEY_SCOPES)},
    }
    document: dict[str, Any] = {
        "schema": report.SCHEMA,
        "mode": "soak" if args.soak else "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "settings": settings,
        "environment": env,
        "cells": [],
        "goals": [],
        "soak": None,
        "baseline": None,
        "auth": None,
    }
    if args.soak:
        if "caddy-h1" not in available:
            raise SystemExit("scripts/bench: --soak needs the stack's Caddy")
        total = _seconds(args.soak)
        cell = plan.Cell("soak", "mixed", available["caddy-h1"], SOAK_CONNECTIONS)
        windows = soak(cell, total, args.rate, _soak_window(total), context)
        settings |= {"soak_s": total, "soak_rate": args.rate}
        document["soak"] = {
            "target": cell.target.name,
            "concurrency": cell.concurrency,
            "summary": summarise(windows),
            "windows": [window.to_json() for window in windows],
        }
    else:
        scenarios = _subset(args.scenarios, tuple(SCENARIOS), "scenario")
        groups = _subset(args.groups, plan.GROUPS, "group")
        cells = plan.build(profile, available, scenarios, groups)
        results = run_plan(cells, profile, context)
        document["cells"] = report.cell_records(cells, results)
        document["goals"] = report.goals(document["cells"], profile.concurrency)
        document["auth"] = report.auth_cost(document["cells"], profile.concurrency)
        if ref:
            document["baseline"] = report.baseline(
                document["cells"], profile.concurrency, ref.to_json(), document["started"]
            )
    document["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return document
