"""What the alert rules (prometheus/alerts.yml) and Prometheus's configuration share with the
rest of the repository, and that every rule has a firing and a quiet case in
prometheus/alerts_test.yml (which `promtool test rules` runs in scripts/test)."""

import re
from typing import Any

import yaml

from backups import STALE_AFTER_TURNS, seconds
from stack_facts import read_env_file
from tests.project import HYPERCORN, ROOT

PROMETHEUS = ROOT / "prometheus"


def load(name: str) -> Any:
    return yaml.safe_load((PROMETHEUS / name).read_text())


def rules() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule for group in load("alerts.yml")["groups"] for rule in group["rules"]
    }


def scrape_job(name: str) -> dict[str, Any]:
    (job,) = [job for job in load("prometheus.yml")["scrape_configs"] if job["job_name"] == name]
    return job  # type: ignore[no-any-return]


def test_every_rule_is_tested_firing_and_quiet() -> None:
    outcomes: dict[str, set[bool]] = {}
    for test in load("alerts_test.yml")["tests"]:
        for case in test["alert_rule_test"]:
            outcomes.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for alert in rules():
        assert outcomes.get(alert) == {True, False}, f"{alert}: no firing or no quiet case"


def test_the_backup_age_alert_judges_as_the_status_command() -> None:
    diff_every = seconds(read_env_file(ROOT / ".env.example")["BACKUP_DIFF_EVERY"])
    threshold = re.search(r">\s*([\d.]+)\s*\*\s*(\d+)\s*$", rules()["BackupTooOld"]["expr"])
    assert threshold is not None
    assert (float(threshold[1]), float(threshold[2])) == (STALE_AFTER_TURNS, diff_every)


def test_prometheus_scrapes_the_ports_the_stack_serves_on() -> None:
    (bind,) = HYPERCORN["bind"]
    (app,) = scrape_job("app")["dns_sd_configs"]
    assert app["port"] == int(bind.rsplit(":", 1)[1])
    caddyfile = (ROOT / "caddy" / "Caddyfile").read_text()
    internal = re.search(r"^:\{\$INTERNAL_PORT:(\d+)\}", caddyfile, re.MULTILINE)
    assert internal is not None
    (static,) = scrape_job("caddy")["static_configs"]
    assert static["targets"] == [f"proxy:{internal[1]}"]


def test_every_rule_is_explained_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for alert in rules():
        assert f"| `{alert}` (" in readme, f"{alert} is not in the README's alert table"
