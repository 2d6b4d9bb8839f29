"""The integration suite runs the real stack: images built from this repository, compose.yaml
as users run it, traffic over the network through Caddy with verified TLS."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def stack(stack_workdir: Path) -> Iterator[Stack]:
    """One stack for every test that leaves it as it found it."""
    running = Stack("service-test", stack_workdir)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def own_stack(stack_workdir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack for one module whose tests stop, kill and restart containers.

    Its own project name and ports, so the shared stack keeps serving meanwhile.
    """
    project = f"service-{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')}"
    destructive = Stack(project, stack_workdir)
    destructive.env.update(HTTP_PORT="28080", HTTPS_PORT="28443")
    destructive.__post_init__()
    destructive.start()
    try:
        yield destructive
    finally:
        destructive.stop()
