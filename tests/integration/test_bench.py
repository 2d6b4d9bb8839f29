"""scripts/bench --quick --baseline HEAD on its own stack (compose.yaml + compose.bench.yaml +
compose.baseline.yaml): every output is written with the documented structure, every scenario,
path and the baseline ran, and no request failed. HEAD as its own baseline proves the mechanics
(its ratios are about 1). Every request sends an API key the bench made with the command line,
which no output shows. Speed is never asserted: the figures are reported, not tested."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest

from stack_facts import compose_labels
from tests.project import ROOT

PROJECT = "service-bench-ci"
# Its own project, image tag and loopback ports: never collides with the other test stacks or
# with a developer's `scripts/bench` (service-bench, 38xxx).
BENCH_ENV = f"""\
COMPOSE_PROJECT_NAME={PROJECT}
PUBLISH_ADDRESS=127.0.0.1
HTTP_PORT=39080
HTTPS_PORT=39443
BENCH_APP_PORT=39000
BENCH_CEILING_ASGI_PORT=39001
BENCH_APP_UNCACHED_PORT=39002
BENCH_APP_PUBLIC_PORT=39003
BENCH_UVICORN_PORT=39444
BENCH_GRANIAN_PORT=39445
BENCH_CEILING_CADDY_PORT=39446
BENCH_BASELINE_PORT=39447
APP_REPLICAS=1
APP_VERSION=bench-ci
APP_IMAGE=service:bench-ci
PROXY_IMAGE=service-proxy:bench-ci
APP_RATE_LIMITS=false
"""
SCENARIOS = {"healthz", "item", "create", "create-keyed", "list", "mixed"}
TARGETS = {
    "caddy-h1",
    "caddy-h2",
    "direct-h1",
    "direct-h1-uncached",
    "direct-h1-public",
    "uvicorn-h2",
    "granian-h2",
    "respond-h1",
    "respond-h2",
    "bare-asgi-h1",
    "baseline-h2",
    "py-h2",
    "py-h3",
    "caddy-h2-netns",
    "direct-h1-netns",
}
LATENCIES = {"p50", "p90", "p99", "max"}
GOALS = {"stack_vs_direct", "item_vs_healthz", "hypercorn_vs_uvicorn", "h3_vs_h2"}
INFORMATIONAL = {
    "create_keyed_vs_create_caddy_h1",
    "create_keyed_vs_create_direct_h1",
    "without_docker_proxy_caddy_h2",
    "without_docker_proxy_direct_h1",
}
BASELINE_RATIOS = {"throughput", "p99", "requests_per_app_cpu_s"}
AUTH_CASES = {"key_cached": "direct-h1", "key_uncached": "direct-h1-uncached"}
# service.keys' keys (svc_<public id>_<secret>): none may appear in any output, nor its header.
KEY = re.compile(r"svc_[0-9a-f]{16}_|Bearer\s+\S")


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("bench")
    env_file = workdir / "bench.env"
    env_file.write_text(BENCH_ENV)
    out = workdir / "out"
    done = subprocess.run(
        [
            *(ROOT / "scripts" / "bench", "--quick", "--baseline", "HEAD"),
            *("--env-file", env_file, "--out", out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    (workdir / "stdout").write_text(done.stdout)
    (workdir / "stderr").write_text(done.stderr)
    return out


@pytest.fixture(scope="module")
def results(output: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((output / "results.json").read_text())
    return document


def test_help_explains_the_command() -> None:
    done = subprocess.run(
        [ROOT / "scripts" / "bench", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--quick", "--soak", "--url", "--pin", "--baseline"):
        assert option in done.stdout


def test_every_output_is_written(output: Path) -> None:
    assert (output / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    report = (output / "report.md").read_text()
    assert "## Goals" in report
    assert "![throughput and latency](chart.png)" in report


def test_results_record_the_environment_and_settings(results: dict[str, Any]) -> None:
    assert results["schema"] == 2
    assert results["mode"] == "quick"
    assert {"cpu_model", "cpus", "kernel"} <= results["environment"]["host"].keys()
    tools = results["environment"]["tools"]
    assert {"wrk", "h2load", "tools_image", "docker", "compose"} <= tools.keys()
    image = subprocess.run(
        [ROOT / "scripts" / "tools-image"], capture_output=True, text=True, check=True
    )
    assert tools["tools_image"] == image.stdout.strip()  # the generators ran from that image
    containers = results["environment"]["containers"]
    assert any(c.get("packages", {}).get("hypercorn") for c in containers.values())
    assert any(c.get("packages", {}).get("uvicorn") for c in containers.values())
    assert any(c.get("caddy") for c in containers.values()), containers
    settings = results["settings"]
    assert settings["repetitions"] >= 1
    assert settings["duration_s"] > 0


def test_every_scenario_path_peer_and_ceiling_ran(results: dict[str, Any]) -> None:
    cells = results["cells"]
    assert {cell["scenario"] for cell in cells} == SCENARIOS
    assert {cell["target"] for cell in cells} == TARGETS
    assert {cell["group"] for cell in cells} >= {
        *("paths", "auth", "docker-proxy", "peers", "baseline", "ceilings", "h3"),
    }


def test_the_bench_made_a_key_and_no_output_shows_it(output: Path, results: dict[str, Any]) -> None:
    """Every cell but public reads needs the key (a 401 is a failed request, which
    test_no_request_failed_in_any_cell rules out); its name is recorded, the key nowhere."""
    key = results["settings"]["api_key"]
    assert re.fullmatch(r"bench-[0-9a-f]{8}", key["name"]), key
    assert set(key["scopes"]) == {"items:read", "items:write", "jobs:read", "jobs:write"}
    outputs = [output / "results.json", output / "report.md", *output.parent.glob("std*")]
    assert len(outputs) == 4
    for path in outputs:
        assert not KEY.search(path.read_text()), path


def test_the_docker_proxy_cells_bypass_it(results: dict[str, Any]) -> None:
    """From inside the edge's and the app's network namespace, no byte goes through the
    userland proxy of the published loopback ports; through them, every byte does."""
    cells = {cell["key"]: cell for cell in results["cells"]}
    for path in ("caddy-h2", "direct-h1"):
        engine = cells[f"docker-proxy/item/{path}-netns/c32"]["runs"][0]["engine_cpu"]
        inside = engine.get("docker-proxy", 0.0)
        through = cells[f"paths/item/{path}/c32"]["runs"][0]["engine_cpu"]["docker-proxy"]
        print(f"docker-proxy's share of a core, {path}: {inside:.3f} inside the namespace, "
              f"{through:.3f} through the port")  # fmt: skip
        assert inside < 0.2 * through, path


def test_no_request_failed_in_any_cell(results: dict[str, Any]) -> None:
    for cell in results["cells"]:
        summary = cell["summary"]
        assert summary["failed"] == 0, cell["key"]
        assert summary["requests"] > 0, cell["key"]
        assert summary["latency_ms"].keys() == LATENCIES
        assert summary["rps_min"] <= summary["rps_median"] <= summary["rps_max"]
        if cell["server"] == "hypercorn":  # the stack's app: busy in every one of its cells
            assert cell["server_cpu_us_per_request"] > 0, cell["key"]
        for run in cell["runs"]:
            assert run["failed"] == 0, cell["key"]
            assert not any("failed" in reason for reason in run["invalid"]), cell["key"]
            assert run["generator_cpu"] >= 0


def test_containers_are_measured(results: dict[str, Any]) -> None:
    direct = next(c for c in results["cells"] if c["target"] == "direct-h1")
    stats = direct["runs"][0]["stats"]
    assert any("-app-" in name for name in stats), stats
    assert all({"cpu_percent", "memory_mib"} == figures.keys() for figures in stats.values())
    # The engine's own processes on this machine: the daemon always, docker-proxy behind
    # published loopback ports when the engine's userland proxy is on (its default).
    assert "dockerd" in direct["runs"][0]["engine_cpu"], direct["runs"][0]["engine_cpu"]


def test_goals_are_reported_as_ratios(results: dict[str, Any]) -> None:
    names = {g["name"] for g in results["goals"]}
    assert names == GOALS | INFORMATIONAL
    for goal in results["goals"]:
        assert isinstance(goal["ratio"], float), goal
        # An informational ratio is a figure, never a goal met or missed.
        informational = goal["name"] in INFORMATIONAL
        assert (goal["goal"] is None) == informational, goal
        assert (goal["met"] is None) == informational, goal


def test_the_auth_cost_is_reported_for_three_cases(results: dict[str, Any], output: Path) -> None:
    section = results["auth"]
    assert (section["scenario"], section["via"], section["tool"]) == ("item", "direct", "wrk")
    assert section["concurrency"] == results["settings"]["concurrency"]
    c = section["concurrency"]
    cases = section["cases"]
    assert cases.keys() == {*AUTH_CASES, "public"}
    assert cases["key_cached"]["cell"] == f"paths/item/direct-h1/c{c}"
    assert cases["key_uncached"]["cell"] == f"auth/item/direct-h1-uncached/c{c}"
    assert cases["public"]["cell"] == f"auth/item/direct-h1-public/c{c}"
    for case, figures in cases.items():
        assert figures["failed"] == 0, case
        assert figures["rps_median"] > 0, case
        assert figures["us_per_request"] == pytest.approx(1e6 / figures["rps_median"], abs=0.11)
    assert section["cost_vs_public"].keys() == AUTH_CASES.keys()
    for case, cost in section["cost_vs_public"].items():
        assert isinstance(cost["throughput_vs_public"], float), case
        # Figures derived from this run's req/s, whatever their sign: reported, not asserted.
        expected = cases[case]["us_per_request"] - cases["public"]["us_per_request"]
        assert cost["us_per_request"] == pytest.approx(expected, abs=0.11), case
        # The app's CPU per request, from docker stats, when both runs' stats caught it.
        cpus = (cases[case]["app_cpu_us_per_request"], cases["public"]["app_cpu_us_per_request"])
        if None not in cpus:
            assert cost["app_cpu_us_per_request"] == pytest.approx(cpus[0] - cpus[1], abs=0.11)
    report = (output / "report.md").read_text()
    assert "## What authentication costs" in report
    for line in ("auth key_cached vs public: ", "auth key_uncached vs public: "):
        assert line in report


def test_the_bench_stack_is_stopped(output: Path) -> None:
    left = docker.from_env().containers.list(all=True, filters={"label": compose_labels(PROJECT)})
    assert not left, [c.name for c in left]


def _head() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_baseline_cells_ran_without_a_failed_request(results: dict[str, Any]) -> None:
    cells = [cell for cell in results["cells"] if cell["group"] == "baseline"]
    assert {cell["scenario"] for cell in cells} == {"healthz", "item"}
    for cell in cells:
        assert cell["target"] == "baseline-h2"
        assert cell["server"] == f"hypercorn@{_head()[:12]}"
        assert (cell["via"], cell["protocol"], cell["tool"]) == ("caddy", "h2", "h2load")
        assert cell["summary"]["failed"] == 0, cell["key"]
        assert cell["summary"]["requests"] > 0, cell["key"]
        for run in cell["runs"]:
            assert run["failed"] == 0, cell["key"]
            # REF's own app container did the work, measured like the stack's app.
            assert any("-app-baseline-" in name for name in run["stats"]), run["stats"]


def test_the_baseline_ratios_are_recorded_and_reported(
    results: dict[str, Any], output: Path
) -> None:
    section = results["baseline"]
    head = _head()
    assert section["ref"] == "HEAD"
    assert section["commit"] == head
    assert section["image"] == f"service:bench-baseline-{head[:12]}"
    assert section["date"] == results["started"]
    assert (section["scenario"], section["via"], section["protocol"]) == ("item", "caddy", "h2")
    assert section["concurrency"] == results["settings"]["concurrency"]
    assert section["ratios"].keys() == BASELINE_RATIOS
    for name, ratio in section["ratios"].items():
        assert isinstance(ratio, float), (name, section)
        assert ratio > 0, (name, section)
    assert section["head"]["container"] == "app"
    assert section["baseline"]["container"] == "app-baseline"
    report = (output / "report.md").read_text()
    assert f"## Baseline: HEAD vs HEAD ({head[:12]})" in report
    for line in ("throughput HEAD/HEAD: ", "p99 HEAD/HEAD: ", "app-CPU-second HEAD/HEAD: "):
        assert line in report
