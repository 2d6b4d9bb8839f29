"""scripts/audit: the snapshot's conversion to OSV, the local OSV service, and the verdicts of
`uv audit` against it (the real uv, the real lock, the pinned snapshot; no advisory service)."""

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import audit_lib
from audit_lib import AdvisoryService, AuditError, OsvRecord, Package, Snapshot

CANARY = Package.of(*audit_lib.CANARY)


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return audit_lib.install_snapshot(tmp_path_factory.mktemp("snapshot"))


@pytest.fixture(scope="module")
def snapshot(snapshot_file: Path) -> Snapshot:
    return audit_lib.load_snapshot(snapshot_file)


@pytest.fixture(scope="module")
def expected() -> set[Package]:
    return audit_lib.exported_packages()


@pytest.fixture
def served(snapshot: Snapshot) -> Iterator[tuple[str, AdvisoryService]]:
    service = AdvisoryService(snapshot.records)
    with audit_lib.serve(service) as url:
        yield url, service


def post(url: str, body: object) -> Any:
    request = urllib.request.Request(f"{url}/v1/querybatch", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


# ---- the snapshot


def test_the_snapshot_is_dated_and_nearly_all_of_it_converts(
    snapshot_file: Path, snapshot: Snapshot
) -> None:
    raw = json.loads(snapshot_file.read_text())
    specs = sum(len(a["specs"]) for name, ads in raw.items() if name != "$meta" for a in ads)
    converted = sum(len(r["affected"][0]["database_specific"]["specs"]) for r in snapshot.records)
    assert f"{snapshot.as_of:%Y-%m-%d}" == "2021-07-01"  # what SECURITY.md states
    assert converted + len(snapshot.refused) == specs
    assert len(snapshot.refused) < specs / 100
    assert any(audit_lib.affects(record, CANARY) for record in snapshot.records)


@pytest.mark.parametrize(
    ("spec", "events", "versions"),
    [
        ("<2.10.1", [{"introduced": "0"}, {"fixed": "2.10.1"}], []),
        (">=1.8a1 ,<1.8.19", [{"introduced": "1.8a1"}, {"fixed": "1.8.19"}], []),
        ("<=0.2.2", [{"introduced": "0"}, {"last_affected": "0.2.2"}], []),
        (">4,<=4.3.11", [{"introduced": "4"}, {"last_affected": "4.3.11"}], []),
        (">=0.0.0", [{"introduced": "0.0.0"}], []),
        ("==3.3.5,==3.3.4", [], ["3.3.5", "3.3.4"]),  # safety-db means either
    ],
)
def test_specs_become_osv_ranges(
    spec: str, events: list[dict[str, str]], versions: list[str]
) -> None:
    assert audit_lib.spec_to_osv(spec) == (events, versions)


@pytest.mark.parametrize(
    "spec", ["<2.15.1,>3.0.0,<3.0.0b9", ">=1.6,<1.6-beta-4", ">1.0,<1.0", "<r5238", "~=1.0"]
)
def test_specs_without_one_osv_range_are_refused(spec: str) -> None:
    with pytest.raises(audit_lib.UnconvertibleSpecError):
        audit_lib.spec_to_osv(spec)


def test_the_converted_snapshot_flags_what_its_specs_say(snapshot: Snapshot) -> None:
    """At every bound of every spec, and below and above them all, OSV's matching of the
    converted record agrees with PEP 440's reading of the original specs. Two differences are
    by design: `>X` flags X itself (OSV's lower bound is inclusive), and an upper bound's own
    pre-releases (`<2.0` and 2.0b1) count as affected, as osv.dev counts them."""
    compared = 0
    for record in snapshot.records:
        affected = record["affected"][0]
        name = affected["package"]["name"]
        specs: list[str] = affected["database_specific"]["specs"]
        clauses = [audit_lib.split_clause(c) for spec in specs for c in spec.split(",")]
        probes = {Version(v) for _, v in clauses} | {Version("0"), Version("999999")}
        for probe in probes:
            osv = audit_lib.affects(record, Package(name, str(probe)))
            pep440 = any(pep440_contains(spec, probe) for spec in specs)
            if osv != pep440:
                assert osv, (record["id"], specs, probe)
                assert any(
                    (op == ">" and Version(v) == probe)
                    or (op in ("<", "<=") and probe.is_prerelease and probe < Version(v))
                    for op, v in clauses
                ), (record["id"], specs, probe)
            compared += 1
    assert compared > 2 * len(snapshot.records)


def pep440_contains(spec: str, version: Version) -> bool:
    if all(c.strip().startswith("==") for c in spec.split(",")):
        return any(Version(c.strip()[2:]) == version for c in spec.split(","))
    return SpecifierSet(spec.replace(" ", "")).contains(version, prereleases=True)


# ---- OSV matching


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.9", False), ("1.0", True), ("1.9", True), ("2.0", False), ("2.5", False),
     ("3.0", True), ("3.2", True), ("3.2.1", False)],
)  # fmt: skip
def test_osv_ranges_walk_their_events_in_version_order(version: str, affected: bool) -> None:
    events = [{"last_affected": "3.2"}, {"introduced": "1.0"}, {"fixed": "2.0"},
              {"introduced": "3.0"}]  # fmt: skip
    assert audit_lib.in_range(events, Version(version)) is affected


def test_listed_versions_and_other_packages() -> None:
    record: OsvRecord = {
        "id": "X-1",
        "affected": [{"package": {"name": "Foo_Bar", "ecosystem": "PyPI"}, "versions": ["1.0"]}],
    }
    assert audit_lib.affects(record, Package.of("foo-bar", "1.0"))
    assert not audit_lib.affects(record, Package.of("foo-bar", "1.0.1"))
    assert not audit_lib.affects(record, Package.of("foo", "1.0"))


# ---- the local OSV service


def test_the_service_answers_as_osv_does(served: tuple[str, AdvisoryService]) -> None:
    url, service = served
    answer = post(url, {"queries": [
        {"package": {"name": "Jinja2", "ecosystem": "PyPI"}, "version": "2.10"},
        {"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "3.1.6"},
    ]})  # fmt: skip
    flagged, clean = answer["results"]
    assert clean == {}
    ids = [vuln["id"] for vuln in flagged["vulns"]]
    assert ids
    assert service.queried == {CANARY, Package("jinja2", "3.1.6")}

    with urllib.request.urlopen(f"{url}/v1/vulns/{ids[0]}", timeout=5) as response:
        assert response.headers["Cache-Control"] == "no-store"
        assert json.load(response)["id"] == ids[0]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}/v1/vulns/NOPE-1", timeout=5)
    assert missing.value.code == 404


def test_reachability_is_an_answer_within_the_timeout(served: tuple[str, AdvisoryService]) -> None:
    url, _ = served
    assert audit_lib.osv_reachable(url)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not audit_lib.osv_reachable(f"http://127.0.0.1:{port}", timeout=1)


# ---- the verdicts, with the real uv audit


def test_the_offline_audit_passes_and_shows_its_snapshot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert audit_lib.main(["--offline"]) == 0
    out = capsys.readouterr().out
    assert "advisories as of 2021-07-01" in out
    assert f"canary {CANARY.name}=={CANARY.version} flagged" in out


def test_every_locked_package_is_asked_about(
    served: tuple[str, AdvisoryService], expected: set[Package]
) -> None:
    url, service = served
    assert audit_lib.audit(url, expected, service.queried) == 0
    assert service.queried >= expected  # the canary's queries were cleared before


def test_an_audit_that_misses_the_canary_fails(snapshot: Snapshot, expected: set[Package]) -> None:
    blind = [r for r in snapshot.records if not audit_lib.affects(r, CANARY)]
    service = AdvisoryService(blind)
    with audit_lib.serve(service) as url, pytest.raises(AuditError, match="canary"):
        audit_lib.audit(url, expected, service.queried)


def test_a_vulnerable_locked_package_fails_the_audit(
    snapshot: Snapshot, expected: set[Package], capsys: pytest.CaptureFixture[str]
) -> None:
    victim = min(expected)
    injected: OsvRecord = {
        "id": "TEST-1", "modified": "2021-07-01T00:00:00Z", "summary": "injected",
        "affected": [{"package": {"name": victim.name, "ecosystem": "PyPI"},
                      "versions": [victim.version]}],
    }  # fmt: skip
    service = AdvisoryService([*snapshot.records, injected])
    with audit_lib.serve(service) as url:
        assert audit_lib.audit(url, expected, service.queried) == audit_lib.FINDINGS
    findings = capsys.readouterr().out.split("known vulnerabilities in the locked dependencies:")[1]
    assert f"{victim.name} {victim.version}: TEST-1" in findings
    assert CANARY.name not in findings  # the canary is no finding of the project


def test_fewer_packages_audited_than_exported_fail(expected: set[Package]) -> None:
    audit_lib.check_coverage(expected, len(expected), set(expected))
    with pytest.raises(AuditError, match="audited"):
        audit_lib.check_coverage(expected, len(expected) - 1, None)
    unseen = min(expected)
    with pytest.raises(AuditError, match=f"{unseen.name}=={unseen.version}"):
        audit_lib.check_coverage(expected, len(expected), expected - {unseen})


def test_the_export_is_read_as_pinned_packages() -> None:
    text = "# comment\nFoo_Bar==1.0 ; sys_platform == 'win32'\n    # via x\nbaz==2\n"
    assert audit_lib.parse_requirements(text) == {Package("foo-bar", "1.0"), Package("baz", "2")}
    with pytest.raises(AuditError, match="pinned"):
        audit_lib.parse_requirements("foo>=1\n")
