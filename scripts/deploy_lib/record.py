"""The deploy record, kept on the target as the labels of a container that never runs: what
`--status` reports when the deploy that wrote it has long ended."""

import json
from datetime import UTC, datetime

from deploy_lib.target import Target
from stack_facts import deploy_record_name


def record(target: Target, image: str, **labels: str) -> None:
    name = deploy_record_name(target.project)
    target.docker("rm", "--force", name, check=False)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    label_args = [
        f"--label=deploy.{key}={value}" for key, value in {**labels, "time": stamp}.items()
    ]
    target.docker("create", "--name", name, *label_args, image, "true")


def read_record(target: Target) -> dict[str, str]:
    name = deploy_record_name(target.project)
    raw = target.docker("inspect", "--format", "{{json .Config.Labels}}", name, check=False)
    labels: dict[str, str] = json.loads(raw) if raw else {}
    return {k.removeprefix("deploy."): v for k, v in labels.items() if k.startswith("deploy.")}
