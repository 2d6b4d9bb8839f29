"""Data outlives containers: `down` and `up` again, and a SIGKILLed database."""

import uuid

import pytest

from stack_facts import compose_labels
from tests.integration.stack import Stack


@pytest.fixture(scope="module")
def stack(own_stack: Stack) -> Stack:
    return own_stack


def create_item(stack: Stack) -> str:
    with stack.client() as client:
        response = client.post("/items", json={"name": f"p-{uuid.uuid4().hex}", "price_cents": 7})
    assert response.status_code == 201
    return str(response.headers["location"])


def unnamed_volumes(stack: Stack) -> set[str]:
    """Volumes the project's containers (exited one-shots too) mount that compose did not name:
    an image's VOLUME without a mount of its own, which `down` leaves behind and `up` replaces."""
    containers = stack.engine.containers.list(
        all=True, filters={"label": compose_labels(stack.project)}
    )
    return {
        f"{container.name}:{mount['Destination']}"
        for container in containers
        for mount in container.attrs["Mounts"]
        if mount["Type"] == "volume" and not mount["Name"].startswith(f"{stack.project}_")
    }


def test_data_survives_down_and_up(stack: Stack) -> None:
    location = create_item(stack)
    # Else every `down` and `up` would leave an empty anonymous volume on the machine.
    assert unnamed_volumes(stack) == set()
    stack.run("down")  # without --volumes
    stack.run("up", "--detach", "--wait")
    stack.wait_until_serving()
    with stack.client() as client:
        assert client.get(location).status_code == 200


def test_committed_data_survives_a_sigkilled_database(stack: Stack) -> None:
    location = create_item(stack)  # the 201 came after the commit
    db = stack.container("db")
    db.kill(signal="SIGKILL")
    db.wait(timeout=30)
    db.start()
    stack.wait_healthy(db)
    stack.wait_until_serving()
    with stack.client() as client:
        response = client.get(location)
    assert response.status_code == 200
    assert response.json()["price_cents"] == 7
