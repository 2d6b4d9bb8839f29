"""The outputs: the terminal table, results.json, report.md and chart.png.

Goals are ratios of medians from the same run (one server's cell over another's); they are
reported, never asserted. Some have a threshold to meet (met or missed); the others, without one,
are figures to read. (A "target", in the plan, is a server behind a path and protocol.)
"""

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_lib.model import RunResult, summarise
from bench_lib.plan import AUTH_SCENARIO, Cell
from bench_lib.scenarios import SCENARIOS

# 2: the ratios are "goals" (they were "targets", the word the plan keeps for its servers).
SCHEMA = 2


@dataclass(frozen=True)
class GoalRatio:
    name: str
    description: str
    numerator: str  # cell keys
    denominator: str
    goal: float | None  # None: informational, a cost to know rather than a goal to meet


def goal_ratios(concurrency: int) -> list[GoalRatio]:
    c = concurrency
    return [
        GoalRatio(
            "stack_vs_direct",
            "GET /items/{id}: the stack over HTTPS/HTTP/2 vs the app direct (HTTP/1.1)",
            f"paths/item/caddy-h2/c{c}",
            f"paths/item/direct-h1/c{c}",
            0.7,
        ),
        GoalRatio(
            "item_vs_healthz",
            "through the stack (HTTP/2): GET /items/{id} vs /healthz (what the database costs)",
            f"paths/item/caddy-h2/c{c}",
            f"paths/healthz/caddy-h2/c{c}",
            0.8,
        ),
        GoalRatio(
            "hypercorn_vs_uvicorn",
            "GET /items/{id} through the same Caddy (HTTP/2): Hypercorn vs uvicorn",
            f"paths/item/caddy-h2/c{c}",
            f"peers/item/uvicorn-h2/c{c}",
            0.8,
        ),
        GoalRatio(
            "item_256_vs_32_in_flight",
            "GET /items/{id} through the stack (HTTP/2): 256 requests in flight vs 32 (no "
            "collapse under load; full profile only)",
            "sweep/item/caddy-h2/c256",
            f"paths/item/caddy-h2/c{c}",
            0.9,
        ),
        GoalRatio(
            "h3_vs_h2",
            "GET /items/{id} through Caddy, Python clients of equal cost: HTTP/3 vs HTTP/2 "
            "(client-bound)",
            f"h3/item/py-h3/c{c}",
            f"h3/item/py-h2/c{c}",
            0.9,
        ),
        *(
            GoalRatio(
                f"without_docker_proxy_{path.replace('-', '_')}",
                f"GET /items/{{id}} {via}: the generator in the container's network namespace vs "
                "through the published loopback port (what docker-proxy costs the bench)",
                f"docker-proxy/item/{path}-netns/c{c}",
                f"paths/item/{path}/c{c}",
                None,
            )
            for path, via in (("caddy-h2", "via Caddy (HTTP/2)"), ("direct-h1", "direct"))
        ),
        *(
            GoalRatio(
                f"create_keyed_vs_create_{path.replace('-', '_')}",
                f"POST /items via {via} (HTTP/1.1): with an Idempotency-Key vs without "
                "(what a keyed write costs)",
                f"paths/create-keyed/{path}/c{c}",
                f"paths/create/{path}/c{c}",
                None,
            )
            for path, via in (("caddy-h1", "Caddy"), ("direct-h1", "the app direct"))
        ),
    ]


def _service_cpu(stats: dict[str, dict[str, float]], service: str) -> float:
    """A compose service's containers' CPU (% of one core; replicas summed) from a run's stats,
    by compose's container names, <project>-<service>-<n>."""
    pattern = re.compile(rf"-{re.escape(service)}-\d+$")
    return sum(v["cpu_percent"] for name, v in stats.items() if pattern.search(name))


# The compose service whose container serves each server's cells (compose.bench.yaml).
SERVER_SERVICES = {
    "hypercorn": "app",
    "hypercorn-uncached": "app-uncached",
    "hypercorn-public": "app-public",
    "uvicorn": "app-uvicorn",
    "granian": "app-granian",
    "bare ASGI": "ceiling-asgi",
    "caddy respond": "ceiling-caddy",
}


def server_service(server: str) -> str:
    return "app-baseline" if server.startswith("hypercorn@") else SERVER_SERVICES[server]


def server_cpu_us_per_request(server: str, runs: list[RunResult]) -> float | None:
    """The median over the runs of the serving container's CPU time per request, in us (for
    the stack's cells, the app's): its docker stats CPU share over the requests per second."""
    service = server_service(server)
    cpus = [(run, _service_cpu(run.stats, service)) for run in runs]
    costs = [cpu / 100 / run.rps * 1e6 for run, cpu in cpus if run.rps and cpu]
    return round(statistics.median(costs), 1) if costs else None


def cell_records(cells: list[Cell], results: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    return [
        {
            "key": cell.key,
            "group": cell.group,
            "scenario": cell.scenario,
            "scenario_title": SCENARIOS[cell.scenario].title,
            "target": cell.target.name,
            "server": cell.target.server,
            "via": cell.target.via,
            "protocol": cell.target.protocol,
            "tool": cell.target.tool,
            "url": cell.target.url,
            "concurrency": cell.concurrency,
            "summary": summarise(results[cell.key]),
            "server_cpu_us_per_request": server_cpu_us_per_request(
                cell.target.server, results[cell.key]
            ),
            "runs": [run.to_json() for run in results[cell.key]],
        }
        for cell in cells
        if results[cell.key]
    ]


def goals(records: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    by_key = {record["key"]: record["summary"] for record in records}
    rows = []
    for goal in goal_ratios(concurrency):
        top, bottom = by_key.get(goal.numerator), by_key.get(goal.denominator)
        if goal.numerator.startswith("sweep/") and top is None:
            continue  # the sweep runs in the full profile only
        ratio = None
        if top and bottom and bottom["rps_median"]:
            ratio = round(top["rps_median"] / bottom["rps_median"], 2)
        rows.append(
            {
                "name": goal.name,
                "description": goal.description,
                "numerator": goal.numerator,
                "denominator": goal.denominator,
                "goal": goal.goal,
                "ratio": ratio,
                "met": None if ratio is None or goal.goal is None else ratio >= goal.goal,
                # A ratio of figures that are not both valid is shown, but marked as such.
                "valid": bool(top and bottom and top["valid"] and bottom["valid"]),
            }
        )
    return rows


# --- --baseline REF: this checkout's app vs REF's, same Caddy image, client and concurrency -----
BASELINE_SCENARIO = "item"


def _app_figures(record: dict[str, Any] | None, service: str) -> dict[str, Any] | None:
    if record is None:
        return None
    summary = record["summary"]
    cpus = [_service_cpu(run["stats"], service) for run in record["runs"]]
    runs = zip(record["runs"], cpus, strict=True)
    per_cpu_second = [run["rps"] / (cpu / 100) for run, cpu in runs if cpu]
    return {
        "cell": record["key"],
        "server": record["server"],
        "container": service,
        "rps_median": summary["rps_median"],
        "p99_ms": summary["latency_ms"]["p99"],
        "app_cpu_percent": round(statistics.median(cpus), 1) if cpus else None,
        "requests_per_app_cpu_s": (
            round(statistics.median(per_cpu_second), 1) if per_cpu_second else None
        ),
        "failed": summary["failed"],
        "valid": summary["valid"],
    }


def _ratio(head: dict[str, Any] | None, base: dict[str, Any] | None, name: str) -> float | None:
    """HEAD's figure over the baseline's, when both were measured."""
    top = head[name] if head else None
    bottom = base[name] if base else None
    return round(top / bottom, 2) if top and bottom else None


def baseline(
    records: list[dict[str, Any]], concurrency: int, ref: dict[str, str], date: str
) -> dict[str, Any]:
    """HEAD/baseline ratios for GET /items/{id} through Caddy over HTTP/2 at the profile's
    concurrency: throughput, p99, and requests per second of the app container's CPU. Reported,
    never asserted (above 1: HEAD serves more, waits longer, does more per CPU-second)."""
    by_key = {record["key"]: record for record in records}
    c, scenario = concurrency, BASELINE_SCENARIO
    head = _app_figures(by_key.get(f"paths/{scenario}/caddy-h2/c{c}"), "app")
    base = _app_figures(by_key.get(f"baseline/{scenario}/baseline-h2/c{c}"), "app-baseline")
    return {
        **ref,
        "date": date,
        "scenario": scenario,
        "via": "caddy",
        "protocol": "h2",
        "concurrency": c,
        "head": head,
        "baseline": base,
        "ratios": {
            "throughput": _ratio(head, base, "rps_median"),
            "p99": _ratio(head, base, "p99_ms"),
            "requests_per_app_cpu_s": _ratio(head, base, "requests_per_app_cpu_s"),
        },
        "valid": bool(head and base and head["valid"] and base["valid"]),
    }


def baseline_lines(section: dict[str, Any]) -> list[str]:
    """The baseline section as plain lines: the same in the terminal and in report.md."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    ratios = section["ratios"]
    caveat = "" if section["valid"] else " (from invalid runs)"
    lines = [
        f"baseline: HEAD vs {section['ref']} ({section['sha12']}, image {section['image']}), "
        f"run {section['date']}: GET /items/{{id}} via Caddy, HTTP/2, "
        f"c={section['concurrency']}{caveat}",
        f"baseline throughput HEAD/{section['ref']}: {shown(ratios['throughput'])}",
        f"baseline p99 HEAD/{section['ref']}: {shown(ratios['p99'])}",
        f"baseline requests per app-CPU-second HEAD/{section['ref']}: "
        f"{shown(ratios['requests_per_app_cpu_s'])}",
    ]
    for who in ("head", "baseline"):
        figures = section[who]
        if figures:
            per_cpu = figures["requests_per_app_cpu_s"]
            lines.append(
                f"  {figures['server']:<22} {figures['rps_median']:,.0f} req/s, "
                f"p99 {figures['p99_ms']:.1f} ms, {figures['container']} CPU "
                f"{figures['app_cpu_percent']}%, "
                f"{'n/a' if per_cpu is None else f'{per_cpu:,.0f}'} req per CPU-s"
            )
    return lines


# --- what authentication costs: the same read from apps that differ in one setting -------------
# case -> (its cell's target, the setting that differs, as compose.bench.yaml sets it)
AUTH_CASES = {
    "key_cached": ("direct-h1", "a key; its lookup cached (APP_API_KEY_CACHE_SECONDS default)"),
    "key_uncached": ("direct-h1-uncached", "a key; a lookup per request (CACHE_SECONDS=0)"),
    "public": ("direct-h1-public", "no key (APP_PUBLIC_READS=true): the no-auth baseline"),
}


def _difference(mine: dict[str, Any], base: dict[str, Any], name: str) -> float | None:
    top, bottom = mine[name], base[name]
    return round(top - bottom, 1) if top and bottom else None


def auth_cost(records: list[dict[str, Any]], concurrency: int) -> dict[str, Any] | None:
    """GET /items/{id} direct (wrk, HTTP/1.1) with each AUTH_CASE, against public reads: the
    throughput ratio, and the cost per request in us, derived from req/s at this fixed
    concurrency (the saturated app spends 1e6/rps us per request: the difference is what
    authentication adds), next to the p50 delta and the app's CPU time per request. Reported,
    never asserted. None when the cells did not run (--groups, --scenarios, --url)."""
    by_key = {record["key"]: record for record in records}
    group = {"direct-h1": "paths"}
    cells = {
        case: by_key.get(f"{group.get(target, 'auth')}/{AUTH_SCENARIO}/{target}/c{concurrency}")
        for case, (target, _) in AUTH_CASES.items()
    }
    if not all(cells.values()):
        return None
    figures = {}
    for case, record in cells.items():
        assert record is not None
        summary = record["summary"]
        figures[case] = {
            "cell": record["key"],
            "setting": AUTH_CASES[case][1],
            "rps_median": summary["rps_median"],
            "p50_ms": summary["latency_ms"]["p50"],
            "p99_ms": summary["latency_ms"]["p99"],
            # None when no request succeeded (a broken key: every answer a 401)
            "us_per_request": round(1e6 / rps, 1) if (rps := summary["rps_median"]) else None,
            "app_cpu_us_per_request": record["server_cpu_us_per_request"],
            "failed": summary["failed"],
            "valid": summary["valid"],
        }
    public = figures["public"]
    costs = {}
    for case in ("key_cached", "key_uncached"):
        mine = figures[case]
        costs[case] = {
            "throughput_vs_public": _ratio(mine, public, "rps_median"),
            "us_per_request": _difference(mine, public, "us_per_request"),
            "p50_delta_ms": round(mine["p50_ms"] - public["p50_ms"], 2),
            "app_cpu_us_per_request": _difference(mine, public, "app_cpu_us_per_request"),
        }
    return {
        "scenario": AUTH_SCENARIO,
        "via": "direct",
        "protocol": "h1",
        "tool": "wrk",
        "concurrency": concurrency,
        "cases": figures,
        "cost_vs_public": costs,
        "uncached_vs_cached_throughput": _ratio(
            figures["key_uncached"], figures["key_cached"], "rps_median"
        ),
        "valid": all(f["valid"] for f in figures.values()),
    }


def _shown(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def auth_lines(section: dict[str, Any]) -> list[str]:
    """The auth-cost section as plain lines: the same in the terminal and in report.md."""
    caveat = "" if section["valid"] else " (from invalid runs)"
    lines = [
        f"authentication cost: GET /items/{{id}} direct (wrk, HTTP/1.1), "
        f"c={section['concurrency']}{caveat}; cost per request = 1e6/req/s over public reads",
    ]
    for case, figures in section["cases"].items():
        lines.append(
            f"  {case:<13} {figures['rps_median']:8,.0f} req/s  p50 {figures['p50_ms']:6.2f} ms  "
            f"{_shown(figures['us_per_request'], '7.1f')} us/req  app CPU "
            f"{_shown(figures['app_cpu_us_per_request'], ',.0f')} us/req  ({figures['setting']})"
        )
    for case, cost in section["cost_vs_public"].items():
        lines.append(
            f"auth {case} vs public: throughput {_shown(cost['throughput_vs_public'], '.2f')}, "
            f"{_shown(cost['us_per_request'], '+.1f')} us per request, "
            f"p50 {cost['p50_delta_ms']:+.2f} ms, "
            f"app CPU {_shown(cost['app_cpu_us_per_request'], '+.1f')} us per request"
        )
    ratio = _shown(section["uncached_vs_cached_throughput"], ".2f")
    lines.append(f"auth key_uncached vs key_cached: throughput {ratio}")
    return lines


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


# --- the terminal table and the Markdown report ------------------------------------------------
_HEADER = (
    *("group", "scenario", "target", "c", "req/s (median)", "range"),
    *("p50", "p90", "p99", "max", "failed", "server CPU/req", "gen CPU", "host CPU"),
    *("docker-proxy", "status"),
)


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    s = record["summary"]
    cost = record["server_cpu_us_per_request"]
    latency = s["latency_ms"]
    status = "ok" if s["valid"] else "INVALID: " + "; ".join(s["invalid_reasons"])
    if s["client_bound"]:
        status += " (client-bound)"
    return (
        record["group"],
        record["scenario"],
        record["target"],
        str(record["concurrency"]),
        f"{s['rps_median']:,.0f}",
        f"{s['rps_min']:,.0f}-{s['rps_max']:,.0f}",
        *(f"{latency[p]:.1f}" for p in ("p50", "p90", "p99", "max")),
        str(s["failed"]),
        "n/a" if cost is None else f"{cost:,.0f} us",
        f"{s['generator_cpu_max']:.0%}",
        f"{s['host_cpu_max']:.0%}",
        f"{s['engine_cpu_max'].get('docker-proxy', 0.0):.0%}",
        status,
    )


def terminal_table(
    records: list[dict[str, Any]],
    goal_rows: list[dict[str, Any]],
    baseline_section: dict[str, Any] | None = None,
    auth_section: dict[str, Any] | None = None,
) -> str:
    rows = [_HEADER, *(_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("latency in ms; range = min-max over the repetitions")
    lines.append("")
    for t in goal_rows:
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}"
        verdict = "" if t["met"] is None else ("met" if t["met"] else "MISSED")
        caveat = "" if t["valid"] else " (from invalid runs)"
        goal = "informational" if t["goal"] is None else f"goal >= {t['goal']}"
        lines.append(f"goal {t['name']}: {ratio} ({goal}) {verdict}{caveat}")
    if baseline_section:
        lines += ["", *baseline_lines(baseline_section)]
    if auth_section:
        lines += ["", *auth_lines(auth_section)]
    return "\n".join(lines)


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _verdict(goal: dict[str, Any]) -> str:
    if goal["goal"] is None:
        return "informational"  # a figure to read: there is nothing to meet
    return "n/a" if goal["met"] is None else "met" if goal["met"] else "missed"


def markdown(document: dict[str, Any], chart: str | None) -> str:
    env, settings, records = document["environment"], document["settings"], document["cells"]
    lines = [
        "# scripts/bench report",
        "",
        f"Run {document['started']} ({document['mode']}), command: `{settings['command']}`.",
        f"Host: {env['host']['cpu_model']}, {env['host']['cpus']} CPUs, "
        f"kernel {env['host']['kernel']}; generator pinned: {settings['pin']}.",
        f"Each cell: {settings['warmup_s']} s warm-up, {settings['duration_s']} s measured, "
        f"{settings['repetitions']} interleaved repetition(s); figures are medians with the "
        "min-max range. A run is invalid when any request failed or the load generator "
        "saturated its core. server CPU/req: the CPU time of the container that serves the "
        "cell (the app's for the stack's cells) per request, from docker stats; "
        "gen CPU: the generator's share of one core; host CPU: the whole "
        "machine's busy share of all its CPUs (near 100 %, the box itself is the limit); "
        "docker-proxy: Docker's userland proxy behind the published loopback ports, share of "
        "one core (the engine's other processes are in results.json).",
        "",
    ]
    if chart:
        lines += [f"![throughput and latency]({chart})", ""]
    lines += ["## Goals (ratios of medians from this run)", ""]
    lines += _markdown_table(
        ("goal", "ratio", "threshold", "verdict"),
        [
            (
                t["description"],
                "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}",
                "-" if t["goal"] is None else f">= {t['goal']}",
                _verdict(t) + ("" if t["valid"] else " (invalid runs)"),
            )
            for t in document["goals"]
        ],
    )
    if document.get("baseline"):
        section = document["baseline"]
        lines += [
            "",
            f"## Baseline: HEAD vs {section['ref']} ({section['sha12']})",
            "",
            f"REF's app image ({section['image']}, built from commit {section['commit']}) "
            "behind its own Caddy built from this checkout, in the same run "
            f"({section['date']}) and the same interleaved rounds. Ratios HEAD/baseline for "
            "`GET /items/{id}` via Caddy over HTTP/2; app CPU from docker stats of `app` and "
            "`app-baseline`. Reported, never asserted.",
            "",
            "```",
            *baseline_lines(section),
            "```",
        ]
    if document.get("auth"):
        lines += [
            "",
            "## What authentication costs",
            "",
            "The same read from three apps of this checkout that differ in one setting "
            "(compose.bench.yaml: `app`, `app-uncached`, `app-public`), in the same "
            "interleaved rounds. Cost per request: 1e6/req/s minus that of public reads, at "
            "this fixed concurrency (the saturated app's time per request); app CPU from "
            "docker stats. Reported, never asserted.",
            "",
            "```",
            *auth_lines(document["auth"]),
            "```",
        ]
    lines += ["", "## Every cell", ""]
    lines += _markdown_table(_HEADER, [_row(r) for r in records])
    lines += ["", "Latency in ms.", "", "## Containers (docker stats, mean CPU % of one core)", ""]
    lines += _markdown_table(
        ("cell", "containers"),
        [
            (
                r["key"],
                ", ".join(
                    f"{name} {v['cpu_percent']:.0f}% {v['memory_mib']:.0f} MiB"
                    for name, v in r["runs"][-1]["stats"].items()
                )
                or "-",
            )
            for r in records
        ],
    )
    if document["soak"]:
        lines += _soak_section(document["soak"], settings)
    lines += ["", "## Environment", "", "```json", json.dumps(env, indent=2), "```", ""]
    return "\n".join(lines)


def _soak_section(soak: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Window by window, so that drift (latency, memory) and errors over time are visible."""
    s = soak["summary"]
    lines = [
        "",
        f"## Soak: mixed scenario, {settings['soak_rate']:.0f} req/s asked, "
        f"{settings['soak_s']:.0f} s, {soak['concurrency']} connections via {soak['target']}",
        "",
        f"{s['requests']} requests, {s['failed']} failed; median {s['rps_median']:.0f} req/s "
        f"(range {s['rps_min']:.0f}-{s['rps_max']:.0f}), "
        f"worst latency {s['latency_ms']['max']} ms.",
        "",
    ]
    rows = []
    for number, window in enumerate(soak["windows"], start=1):
        latency = window["latency_ms"]
        memory = ", ".join(
            f"{name} {v['memory_mib']:.0f} MiB" for name, v in window["stats"].items()
        )
        rows.append(
            (
                str(number),
                f"{window['rps']:.0f}",
                *(f"{latency[p]:.1f}" for p in ("p50", "p99", "max")),
                str(window["failed"]),
                memory or "-",
            )
        )
    return lines + _markdown_table(
        ("window", "req/s", "p50 ms", "p99 ms", "max ms", "failed", "memory"), rows
    )


# --- the chart -----------------------------------------------------------------------------------
def chart(records: list[dict[str, Any]], path: Path) -> None:
    """Throughput (median, min-max bars) and latency percentiles per scenario and path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in records if r["group"] != "sweep"]
    sweep = sorted(
        (r for r in records if r["scenario"] == "item" and r["target"] == "caddy-h2"),
        key=lambda r: r["concurrency"],
    )
    panels = 3 if len(sweep) > 1 else 2
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 0.32 * len(main) + 2.2))
    labels = [f"{r['scenario']} · {r['target']}" for r in main]
    positions = list(range(len(main)))
    medians = [r["summary"]["rps_median"] for r in main]
    errors = [
        [m - r["summary"]["rps_min"] for m, r in zip(medians, main, strict=True)],
        [r["summary"]["rps_max"] - m for m, r in zip(medians, main, strict=True)],
    ]
    colours = [
        "#bbbbbb" if not r["summary"]["valid"] else "#4c72b0" if r["via"] == "caddy" else "#55a868"
        for r in main
    ]
    axes[0].barh(positions, medians, xerr=errors, color=colours)
    axes[0].set_yticks(positions, labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xscale("log")  # ceilings are 10x the app: ratios stay readable
    axes[0].set_xlabel("requests/s (median, min-max; log); grey = invalid run")
    for offset, (name, colour) in enumerate(
        (("p50", "#4c72b0"), ("p90", "#dd8452"), ("p99", "#c44e52"))
    ):
        axes[1].barh(
            [p + (offset - 1) * 0.27 for p in positions],
            [r["summary"]["latency_ms"][name] for r in main],
            height=0.27,
            color=colour,
            label=name,
        )
    axes[1].set_yticks(positions, [""] * len(positions))
    axes[1].invert_yaxis()
    axes[1].set_xscale("log")
    axes[1].set_xlabel("latency, ms (log)")
    axes[1].legend(fontsize=8)
    if panels == 3:
        levels = [r["concurrency"] for r in sweep]
        axes[2].plot(levels, [r["summary"]["rps_median"] for r in sweep], "o-", label="req/s")
        axes[2].set_xscale("log", base=2)
        axes[2].set_xlabel("concurrency: GET /items/{id}, Caddy HTTP/2")
        axes[2].set_ylabel("requests/s")
        p99 = axes[2].twinx()
        p99.plot(levels, [r["summary"]["latency_ms"]["p99"] for r in sweep], "s--", color="#c44e52")
        p99.set_ylabel("p99 ms", color="#c44e52")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
