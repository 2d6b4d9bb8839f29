"""scripts/docker-bench's own logic, without an engine: the pinned sources and the allow-list's
scopes (the benchmark itself runs in tests/integration/test_docker_bench.py)."""

import shutil
from pathlib import Path

import pytest

import docker_bench
from docker_bench import Allowed, BenchError

CONTAINERS = {
    "p-proxy-1": ("proxy", "service-proxy:dev"),
    "p-app-1": ("app", "service:dev"),
    "p-db-1": ("db", "service-db:dev"),
}


def test_the_vendored_benchmark_matches_its_pinned_sums() -> None:
    docker_bench.verify_checksums()


def test_a_changed_or_an_added_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "bench"
    shutil.copytree(docker_bench.BENCH_DIR, copy)
    (copy / "tests" / "5_container_runtime.sh").write_text("check_5_29() { :; }\n")
    with pytest.raises(BenchError, match=r"5_container_runtime\.sh: SHA-256"):
        docker_bench.verify_checksums(copy)
    shutil.copy(docker_bench.BENCH_DIR / "tests" / "5_container_runtime.sh", copy / "tests")
    (copy / "tests" / "6_docker_security_operations.sh").write_text("")
    with pytest.raises(BenchError, match="not in"):
        docker_bench.verify_checksums(copy)


def test_every_allow_list_entry_has_a_scope_and_a_reason() -> None:
    allowed = docker_bench.read_allowed()
    assert allowed, "the allow-list is empty"
    services = {"proxy", "app", "db", "backup", docker_bench.ANY}
    for entry in allowed.values():
        assert entry.scope <= services, entry
        assert len(entry.reason.split()) >= 5, entry
    # What issue 17 fixed may never be allowed: root users, CPU, root filesystem, pids.
    assert not {"4.1", "5.12", "5.13", "5.29"} & allowed.keys()


def bench_result(check: str, items: list[str]) -> dict[str, object]:
    result = {"id": check, "desc": "a check", "result": "WARN", "items": items}
    return {"tests": [{"id": check.split(".")[0], "results": [result]}]}


def test_a_warning_is_allowed_only_within_its_scope() -> None:
    allowed = {
        "5.9": Allowed("5.9", frozenset({"proxy"}), "the edge publishes its ports"),
        "4.6": Allowed("4.6", frozenset({"*"}), "health checks live in compose.yaml"),
    }

    def judged(check: str, items: list[str]) -> bool:
        (warning,) = docker_bench.judge(bench_result(check, items), CONTAINERS, allowed)
        return bool(warning["allowed"])

    assert judged("5.9", ["p-proxy-1:443"])
    assert not judged("5.9", ["p-proxy-1:443", "p-db-1:5432"]), "db publishes a port"
    assert not judged("5.9", []), "a scoped entry does not cover the host"
    assert judged("4.6", ["[service-db:dev]", "[service:dev]"])
    assert not judged("5.29", ["p-app-1"]), "not in the allow-list"


def test_the_include_pattern_names_exactly_the_projects_containers_and_images() -> None:
    pattern = docker_bench.include_pattern(CONTAINERS)
    assert pattern.split("|") == [
        "^p-app-1$",
        "^p-db-1$",
        "^p-proxy-1$",
        "^service +dev ",
        "^service-db +dev ",
        "^service-proxy +dev ",
    ]
