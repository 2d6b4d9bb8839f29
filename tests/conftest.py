"""Shared test set-up: Docker is required (the tests run real Postgres and the real stack)."""

import os

# Read by testcontainers at import time, so set before any test module imports it.
# Ryuk (the reaper container) cannot be pulled on air-gapped hosts; fixtures clean up instead.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
# Containers publish on the host's loopback; "localhost" is also the name the stack's
# certificates are issued for.
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "localhost")

import docker
import pytest


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    """Fail (never skip) when no Docker engine answers: these tests exist to run for real."""
    try:
        docker.from_env().ping()
    except Exception as error:
        pytest.fail(f"these tests need a running Docker engine: {error}", pytrace=False)
