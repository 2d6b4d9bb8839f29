"""The integration suite runs the real stack: images built from this repository, compose.yaml
as users run it, traffic over the network through Caddy with verified TLS."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test under tests/integration `integration` (-m "not integration")."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def stack(stack_workdir: Path) -> Iterator[Stack]:
    """One stack for every test that leaves it as it found it."""
    with Stack("service-test", stack_workdir).running() as running:
        yield running


@pytest.fixture(scope="module")
def own_stack(stack_workdir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack for one module whose tests stop, kill and restart containers.

    Its own project name and ports, so the shared stack keeps serving meanwhile.
    """
    project = f"service-{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')}"
    ports = {"HTTP_PORT": "28080", "HTTPS_PORT": "28443"}
    with Stack(project, stack_workdir, overrides=ports).running() as destructive:
        yield destructive


@pytest.fixture(scope="session")
def abuse_stack(stack_workdir: Path) -> Iterator[Stack]:
    """The stack that the bad-input and abuse tests (issue 6) hammer.

    Its own project and ports, so floods, slow clients and a stopped database never reach the
    shared stack. One for the session, not one per module: a stack start costs ~30 s on two
    cores, and every test here leaves it serving (the outage test restarts the database).
    """
    overrides = {"HTTP_PORT": "48080", "HTTPS_PORT": "48443", "APP_REQUEST_BODY_TIMEOUT": "5"}
    with Stack("service-abuse", stack_workdir, overrides=overrides).running() as abused:
        yield abused
