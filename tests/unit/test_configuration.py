"""Every variable that .env.example documents reaches its component, and every setting of the
app can be set: .env.example, service/settings.py and what compose.yaml passes are one list.

`docker compose config` renders compose.yaml with a distinct value for every documented
variable; each value must land where its component reads it. Needs the compose plugin, not an
engine."""

import re
from pathlib import Path
from typing import Any

import pytest

from service.settings import ENV_PREFIX, Settings
from stack_facts import read_env_file
from tests.project import ROOT, render_compose

EXAMPLE = read_env_file(ROOT / ".env.example")
CADDY_VARIABLES = set(re.findall(r"\{\$([A-Z_]+)", (ROOT / "caddy" / "Caddyfile").read_text()))
# The stack sets these itself: Postgres's address, and the password as a file (SECURITY.md).
STACK_OWNED = {"database_url", "database_password", "database_password_file"}
SETTINGS = {
    f"{ENV_PREFIX}{name.upper()}": field
    for name, field in Settings.model_fields.items()
    if name not in STACK_OWNED
}
# The app's settings reach it as environment variables, but the version is the image's own
# (a build argument), so that a deploy's image always reports the commit it was built from.
BUILT_IN = {"APP_VERSION"}


# The overlays' own variables, followed by a test of their own below.
OBSERVABILITY_VARIABLES = {"PROMETHEUS_PORT"}


def render(
    tmp_path_factory: pytest.TempPathFactory, *overlays: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """compose.yaml (and overlays) rendered with a distinct value for each variable of
    .env.example."""
    values = {name: distinct_value(number, name) for number, name in enumerate(EXAMPLE)}
    env_file = tmp_path_factory.mktemp("compose") / "sentinel.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    config = render_compose("compose.yaml", *overlays, env_file=env_file)
    return values, config


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, Any]]:
    return render(tmp_path_factory)


def distinct_value(number: int, name: str) -> str:
    """A value compose accepts for the variable, and no other variable gets."""
    if name.endswith("_PORT"):
        return str(20000 + number)
    if name == "PUBLISH_ADDRESS":
        return "127.0.0.9"
    if name == "APP_REPLICAS":
        return "7"
    return f"value-{number}-{name.lower().replace('_', '-')}"


def test_every_setting_is_documented_with_its_default() -> None:
    documented = {name for name in EXAMPLE if name in SETTINGS}
    assert documented == SETTINGS.keys(), "settings missing from .env.example"
    for name, field in SETTINGS.items():
        assert EXAMPLE[name] == str(field.default), f"{name}: .env.example says another default"


def test_every_variable_compose_reads_is_documented() -> None:
    read = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "compose.yaml").read_text()))
    assert read - EXAMPLE.keys() == set(), "compose.yaml reads variables .env.example omits"


def test_every_setting_reaches_the_app(rendered: tuple[dict[str, str], dict[str, Any]]) -> None:
    values, config = rendered
    app = config["services"]["app"]
    for name in SETTINGS.keys() - BUILT_IN:
        assert app["environment"].get(name) == values[name], f"{name} never reaches the app"
    assert app["build"]["args"]["VERSION"] == values["APP_VERSION"]


def test_every_edge_variable_reaches_caddy(rendered: tuple[dict[str, str], dict[str, Any]]) -> None:
    values, config = rendered
    proxy = config["services"]["proxy"]
    for name in CADDY_VARIABLES & EXAMPLE.keys():
        assert proxy["environment"].get(name) == values[name], f"{name} never reaches Caddy"


# OpenTelemetry's own variables, read by Caddy's SDK and the app's (service/tracing.py).
OTEL_VARIABLES = {name for name in EXAMPLE if name.startswith("OTEL_")}


def test_every_otel_variable_reaches_caddy_and_the_app(
    rendered: tuple[dict[str, str], dict[str, Any]],
) -> None:
    values, config = rendered
    proxy, app = config["services"]["proxy"], config["services"]["app"]
    assert {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"} <= OTEL_VARIABLES
    for name in OTEL_VARIABLES - {"OTEL_SERVICE_NAME"}:
        assert app["environment"].get(name) == values[name], f"{name} never reaches the app"
        assert proxy["environment"].get(name) == values[name], f"{name} never reaches Caddy"
    service_name = values["OTEL_SERVICE_NAME"]
    assert app["environment"]["OTEL_SERVICE_NAME"] == service_name
    assert proxy["environment"]["OTEL_SERVICE_NAME"] == f"{service_name}-edge"


def test_every_compose_variable_lands_where_it_is_documented(
    rendered: tuple[dict[str, str], dict[str, Any]],
) -> None:
    values, config = rendered
    services = config["services"]
    proxy, app, db, backup = (services[name] for name in ("proxy", "app", "db", "backup"))
    published = {(port["host_ip"], int(port["published"])) for port in proxy["ports"]}
    landed = {
        "COMPOSE_PROJECT_NAME": config["name"],
        "APP_IMAGE": app["image"],
        "PROXY_IMAGE": proxy["image"],
        "DB_IMAGE": db["image"],
        "APP_REPLICAS": str(app["deploy"]["replicas"]),
        "DB_ARCHIVE_TIMEOUT": next(
            arg.split("=", 1)[1] for arg in db["command"] if arg.startswith("archive_timeout=")
        ),
        "BACKUP_FULL_EVERY": backup["environment"]["BACKUP_FULL_EVERY"],
        "BACKUP_DIFF_EVERY": backup["environment"]["BACKUP_DIFF_EVERY"],
    }
    assert backup["image"] == db["image"], "the backup service runs the database's image"
    for name, where in landed.items():
        assert where == values[name], f"{name} does not reach compose's {name.lower()}"
    assert values["GRACEFUL_TIMEOUT"] in app["command"], "GRACEFUL_TIMEOUT never reaches Hypercorn"
    for port in ("HTTP_PORT", "HTTPS_PORT"):
        assert (values["PUBLISH_ADDRESS"], int(values[port])) in published, port
    followed = (
        SETTINGS.keys()
        | CADDY_VARIABLES
        | OTEL_VARIABLES
        | landed.keys()
        | {"GRACEFUL_TIMEOUT"}
        | OBSERVABILITY_VARIABLES
    )
    assert EXAMPLE.keys() - followed == {"PUBLISH_ADDRESS"}, "a documented variable no test follows"


def test_prometheus_is_published_on_loopback_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    values, config = render(tmp_path_factory, "compose.observability.yaml")
    prometheus = config["services"]["prometheus"]
    published = [(port["host_ip"], port["published"]) for port in prometheus["ports"]]
    assert published == [("127.0.0.1", values["PROMETHEUS_PORT"])]
    # Where Caddy's internal listener and every replica are (prometheus/prometheus.yml).
    assert set(prometheus["networks"]) == {"edge"}


def test_the_built_images_are_named_after_the_project(tmp_path: Path) -> None:
    """Unless an env file names them: two checkouts under two project names never retag each
    other's images (.env.example leaves the names empty)."""
    env_file = tmp_path / "other.env"
    env_file.write_text("COMPOSE_PROJECT_NAME=other\nAPP_IMAGE=\nPROXY_IMAGE=\nDB_IMAGE=\n")
    config = render_compose("compose.yaml", "compose.observability.yaml", env_file=env_file)
    built = {name: s["image"] for name, s in config["services"].items() if "build" in s}
    assert built == {
        "proxy": "other-proxy:dev",
        "app": "other:dev",
        "db": "other-db:dev",
        "backup": "other-db:dev",
        "prometheus": "other-prometheus:dev",
    }
