"""Prometheus (compose.observability.yaml) against the real stack: it finds both app replicas
through Docker's DNS and scrapes them and Caddy, and an error burst through Caddy (Postgres
stopped: the API answers 503) makes the edge's 5xx alert fire.

What differs from the shipped Prometheus, and only that: scrape, evaluation and DNS refresh
every second, and every rule's `for:` shortened (fast_prometheus_files below), so that the
test waits seconds. The rules' expressions and thresholds are the shipped ones, read from
prometheus/alerts.yml, whose production `for:` values promtool tests (alerts_test.yml)."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stack_facts import eventually
from tests.integration.stack import Stack
from tests.project import ROOT

PROMETHEUS_PORT = 61090
TEST_INTERVAL = "1s"
TEST_FOR = "5s"
REPLICAS = 2
FILES = ("prometheus.yml", "alerts.yml")
# Bounded traffic: the burst sends at most this many requests, in rounds, until the alert fires.
BURST_ROUND = 20
BURST_MAX_REQUESTS = 600


def fast_prometheus_files(workdir: Path) -> Path:
    """The shipped configuration and rules, made fast (see the module's docstring), and a
    compose overlay that mounts them into the Prometheus container."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": TEST_INTERVAL, "evaluation_interval": TEST_INTERVAL}
    for job in config["scrape_configs"]:
        for discovery in job.get("dns_sd_configs", []):
            discovery["refresh_interval"] = TEST_INTERVAL
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = TEST_FOR
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    (workdir / "alerts.yml").write_text(yaml.safe_dump(rules))
    overlay = workdir / "compose.alerts-test.yaml"
    mounts = [f"{workdir / name}:/etc/prometheus/{name}:ro" for name in FILES]
    overlay.write_text(yaml.safe_dump({"services": {"prometheus": {"volumes": mounts}}}))
    return overlay


@pytest.fixture(scope="module")
def stack(stack_workdir: Path) -> Iterator[Stack]:
    workdir = stack_workdir / "alerts"
    workdir.mkdir()
    overrides = {
        "HTTP_PORT": "61080",
        "HTTPS_PORT": "61443",
        "PROMETHEUS_PORT": str(PROMETHEUS_PORT),
        "APP_REPLICAS": str(REPLICAS),
    }
    overlays = ("compose.observability.yaml", str(fast_prometheus_files(workdir)))
    observed = Stack("service-alerts", stack_workdir, overrides=overrides, overlays=overlays)
    with observed.running():
        yield observed


def prometheus(path: str, **params: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{PROMETHEUS_PORT}{path}", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def healthy_targets() -> dict[str, set[str]]:
    """The instances Prometheus scrapes successfully, by job."""
    found: dict[str, set[str]] = {}
    for target in prometheus("/api/v1/targets", state="active")["activeTargets"]:
        if target["health"] == "up":
            found.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
    return found


def alert_states(name: str) -> dict[str, str]:
    """Each active instance of an alert (its labels, as text) and its state."""
    return {
        str(sorted(alert["labels"].items())): alert["state"]
        for alert in prometheus("/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == name
    }


def test_prometheus_finds_and_scrapes_every_replica_and_the_edge(stack: Stack) -> None:
    network = f"{stack.project}_edge"
    replicas = {
        f"{app.attrs['NetworkSettings']['Networks'][network]['IPAddress']}:8000"
        for app in stack.containers("app")
    }
    assert len(replicas) == REPLICAS
    expected = {"app": replicas, "caddy": {"proxy:9180"}}
    assert eventually(lambda: healthy_targets() == expected, timeout=60), healthy_targets()
    # The app's own readiness gauge, from each replica.
    ready = prometheus("/api/v1/query", query='app_ready{job="app"}')["result"]
    assert {(r["metric"]["instance"], r["value"][1]) for r in ready} == {
        (replica, "1") for replica in replicas
    }


def test_an_error_burst_through_the_edge_fires_the_5xx_alert(stack: Stack) -> None:
    assert eventually(lambda: "caddy" in healthy_targets(), timeout=60)
    with stack.client() as client:
        for _ in range(BURST_ROUND):  # some served traffic first: the ratio has a denominator
            assert client.get("/items?limit=1").status_code == 200
    assert alert_states("EdgeErrorRatioHigh") == {}, "the 5xx alert is active before any 5xx"

    stack.run("stop", "db")
    try:
        started = time.monotonic()
        statuses: dict[int, int] = {}
        with stack.client() as client:
            while sum(statuses.values()) < BURST_MAX_REQUESTS:
                for _ in range(BURST_ROUND):
                    status = client.get("/items?limit=1").status_code
                    statuses[status] = statuses.get(status, 0) + 1
                if "firing" in alert_states("EdgeErrorRatioHigh").values():
                    break
                time.sleep(0.25)
        print(f"burst: {time.monotonic() - started:.1f} s, answers {statuses}")
        assert set(alert_states("EdgeErrorRatioHigh").values()) == {"firing"}, statuses
        assert set(statuses) == {503}, f"Postgres stopped: the API answers 503 only, {statuses}"
        # Both replicas fail their readiness check meanwhile: the not-ready alert, per replica.
        assert eventually(
            lambda: list(alert_states("AppReplicaNotReady").values()) == ["firing"] * REPLICAS,
            timeout=30,
        ), alert_states("AppReplicaNotReady")
    finally:
        stack.run("start", "db")
