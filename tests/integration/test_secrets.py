"""No secret in any image layer, image configuration or container environment: the database
password lives in the `secrets` volume only, the backup repository's key in the `backup_key`
volume only (which the app does not mount), and Caddy's local CA is created in each stack's
`caddy_data` volume, never in an image (SECURITY.md)."""

import io
import re
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest

from tests.integration.stack import Stack
from tests.project import ROOT

# Variable names that carry a secret by value; *_FILE variables name a file instead.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE", re.IGNORECASE)
PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
# Compiled code is not searched for keys: GnuTLS carries the PEM keys of its self-tests.
ELF = b"\x7fELF"
SECRET_FILE_NAMES = re.compile(r"(^|/)(\.env|db_password|backup_key|id_rsa|id_ed25519|.*\.key)$")
SERVICES = ("proxy", "app", "db", "backup", "secrets")


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


def read_secret(stack: Stack, service: str, path: str, length: int) -> str:
    """A secret as the service that uses it reads it (and as long as the secrets service makes
    it)."""
    code, output = stack.exec(service, "cat", path)
    assert code == 0, output
    assert len(output.strip()) == length
    return output.strip()


@pytest.fixture(scope="module")
def password(stack: Stack) -> str:
    return read_secret(stack, "app", "/run/secrets/db_password", 40)


@pytest.fixture(scope="module")
def backup_key(stack: Stack) -> str:
    return read_secret(stack, "backup", "/run/backup-key/backup_key", 64)


def test_the_app_cannot_read_the_backup_key(stack: Stack) -> None:
    for app in stack.containers("app"):
        mounts = {mount["Destination"] for mount in app.attrs["Mounts"]}
        assert "/run/backup-key" not in mounts, app.name
        code, _ = app.exec_run(["cat", "/run/backup-key/backup_key"])
        assert code != 0, f"{app.name} can read the backup key"


def secret_variables(environment: list[str]) -> list[str]:
    """KEY=VALUE entries whose name says secret and whose value is not a file path."""
    found = []
    for entry in environment:
        name, _, value = entry.partition("=")
        if SECRET_NAME.search(name) and not name.endswith("_FILE") and value:
            found.append(entry)
    return found


def test_no_secret_in_any_container_environment_or_command(
    stack: Stack, password: str, backup_key: str
) -> None:
    for service in SERVICES:
        for container in stack.containers(service):
            config = container.attrs["Config"]
            assert secret_variables(config.get("Env") or []) == [], container.name
            inspected = str(container.attrs)
            for secret in (password, backup_key):
                assert secret not in inspected, f"a secret is in `docker inspect {container.name}`"


def test_no_secret_in_any_image_history_or_configuration(
    stack: Stack, password: str, backup_key: str
) -> None:
    client = docker.from_env()
    images = {c.image.id for s in SERVICES if s != "secrets" for c in stack.containers(s)}
    for image_id in images:
        image = client.images.get(image_id)
        assert secret_variables(image.attrs["Config"].get("Env") or []) == [], image.tags
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image_id],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for secret in (password, backup_key):
            assert secret not in history, image.tags
            assert secret not in str(image.attrs), image.tags


def built_image(stack: Stack, name: str) -> str:
    """An image this project builds: the stack's app, proxy or db, or the tools image."""
    if name == "tools":
        command = [ROOT / "scripts" / "tools-image"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    return str(stack.container(name).image.id)


@pytest.mark.parametrize("image", ["app", "proxy", "db", "tools"])
def test_no_secret_in_any_layer_of_a_built_image(
    stack: Stack, password: str, backup_key: str, image: str
) -> None:
    """Every file of every layer: no password, no private key (Caddy's CA!), no secret file."""
    saved = io.BytesIO()
    for chunk in docker.from_env().images.get(built_image(stack, image)).save(named=False):
        saved.write(chunk)
    saved.seek(0)
    findings = []
    with tarfile.open(fileobj=saved) as archive:
        layers = [m for m in archive.getmembers() if m.name.endswith(("layer.tar", ".tar"))]
        assert layers, "docker save gave no layers"
        for member in layers:
            layer_file = archive.extractfile(member)
            assert layer_file is not None
            with tarfile.open(fileobj=layer_file) as layer:
                for entry in layer:
                    if SECRET_FILE_NAMES.search(entry.name):
                        findings.append(f"{member.name}: {entry.name}")
                    if not entry.isfile():
                        continue
                    content = layer.extractfile(entry)
                    data = content.read() if content else b""
                    key = not data.startswith(ELF) and PRIVATE_KEY.search(data)
                    if password.encode() in data or backup_key.encode() in data or key:
                        findings.append(f"{member.name}: {entry.name}")
    assert findings == []


def test_each_fresh_edge_creates_its_own_local_ca(stack_workdir: Path) -> None:
    """`down -v` then `up`: a new caddy_data volume, a new root. Nothing in the image decides it."""
    edge = Stack(
        "service-fresh-ca", stack_workdir, overrides={"HTTP_PORT": "59080", "HTTPS_PORT": "59443"}
    )
    roots = []
    try:
        for _ in range(2):
            # The edge alone: the CA is Caddy's, and Caddy starts without its upstreams.
            edge.run("up", "--detach", "--no-deps", "--wait", "proxy")
            edge.copy_ca()
            roots.append(edge.ca_file.read_bytes())
            edge.run("down", "--volumes")
    finally:
        edge.run("down", "--volumes", check=False)
    first, second = roots
    assert first.startswith(b"-----BEGIN CERTIFICATE-----")
    assert first != second, "two fresh caddy_data volumes got the same root CA"
