"""scripts/deploy goes only where an env file says, and checks it can get there first.

`docker` here is a tripwire on PATH: it records that it ran (and with which DOCKER_HOST) and
fails as an unreachable engine does, so each test shows what the deploy did before any
Docker call, and that a refused env file made none."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.project import ROOT

TRIPWIRE = """#!/bin/sh
echo "${DOCKER_HOST:-local} $*" >>"$(dirname "$0")/calls"
echo "error during connect: Get \"http://docker.example.com/v1.50/info\": command [ssh -l deploy \
-- host.invalid docker system dial-stdio] has exited with exit status 255, make sure the URL is \
valid: stderr=ssh: connect to host example port 22: Connection refused" >&2
exit 1
"""


@pytest.fixture
def tripwire(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(TRIPWIRE)
    docker.chmod(0o755)
    return bin_dir


def deploy(tripwire: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{tripwire}:{os.environ['PATH']}"}
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONTEXT", None)
    command = [str(ROOT / "scripts" / "deploy"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def calls(tripwire: Path) -> list[str]:
    record = tripwire / "calls"
    return record.read_text().splitlines() if record.exists() else []


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize("action", [[], ["--status"], ["--rollback"]])
def test_a_shipped_env_file_names_no_target_and_is_refused_before_any_docker_call(
    tripwire: Path, environment: str, action: list[str]
) -> None:
    result = deploy(tripwire, environment, *action)
    assert result.returncode == 1, result
    assert f"deploy/{environment}.env names no target" in result.stderr
    assert "DOCKER_HOST=ssh://deploy@your-host" in result.stderr
    assert "runbook" in result.stderr
    assert "DEPLOY_LOCAL_ENGINE=yes" in result.stderr
    assert calls(tripwire) == []


def test_the_local_engine_needs_an_explicit_opt_in(tripwire: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "here.env"
    env_file.write_text("COMPOSE_PROJECT_NAME=here\nDEPLOY_LOCAL_ENGINE=yes\n")
    result = deploy(tripwire, str(env_file), "--status")
    # Past the target check: the next step is reaching the (unreachable) engine.
    assert "names no target" not in result.stderr
    assert "cannot reach the Docker engine at this machine's engine: " in result.stderr
    assert calls(tripwire) == ["local info --format {{.ID}}"]


def test_an_unreachable_target_fails_before_anything_is_built_or_sent(
    tripwire: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "remote.env"
    env_file.write_text("DOCKER_HOST=ssh://deploy@host.invalid\n")
    result = deploy(tripwire, str(env_file))
    assert result.returncode == 1
    # ssh's own words, without the CLI's wrapping.
    assert result.stderr.strip().endswith(
        "cannot reach the Docker engine at ssh://deploy@host.invalid: "
        "ssh: connect to host example port 22: Connection refused"
    ), result.stderr
    # One call, the check; no build, no image lookup, no compose.
    assert calls(tripwire) == ["ssh://deploy@host.invalid info --format {{.ID}}"]


def test_an_older_python_is_told_which_version_the_deploy_needs() -> None:
    """scripts/deploy runs on the host's python3: on 3.10 it names what it needs, before
    deploy_lib's 3.11-only imports fail with a message that names neither."""
    script = ROOT / "scripts" / "deploy"
    as_if_310 = (
        "import sys; sys.version_info = (3, 10, 12, 'final', 0); "
        f"exec(compile(open({str(script)!r}).read(), 'scripts/deploy', 'exec'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", as_if_310, "staging"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == f"scripts/deploy needs Python >= 3.11; {sys.executable} is 3.10.12\n"
