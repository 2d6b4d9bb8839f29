"""The locked dependencies against known vulnerabilities: scripts/audit --help, SECURITY.md
"Dependencies".

`uv audit` does the work. It asks an OSV service (/v1/querybatch, then /v1/vulns/{id}) which
advisories affect each locked package: osv.dev when it answers, otherwise an OSV-compatible
service on 127.0.0.1 that this module serves from a pinned advisory snapshot (the safety-db
package from PyPI, verified by its sha256). Every run also audits a canary project that locks
a release known to be vulnerable: an audit that does not flag it cannot flag anything, and
fails.
"""

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeAlias

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
OSV_URL = "https://api.osv.dev"
OSV_PROBE_TIMEOUT = 3.0  # seconds; an unreachable host fails faster (no DNS here), a slow one waits

# The snapshot: refresh by bumping both (SECURITY.md "Dependencies").
SNAPSHOT_PACKAGE = "safety-db"
SNAPSHOT_VERSION = "2021.7.17"
SNAPSHOT_SHA256 = "33d4f657060345e5a417e05d2fd59fcc42bbcdf2c246e4e7bdb2238f8566c429"
SNAPSHOT_LICENSE = "CC BY-NC 4.0"

# The canary project locks exactly this release; its advisories must be reported.
CANARY_PROJECT = ROOT / "scripts" / "audit.d" / "canary"
CANARY = ("jinja2", "2.10")

# Advisory id -> why it does not apply to this project. Empty: nothing is ignored.
IGNORED: Mapping[str, str] = {}

# Exit codes: findings in the project; an audit that cannot be trusted (canary, coverage, uv).
FINDINGS = 1
BROKEN = 2

OsvRecord: TypeAlias = dict[str, Any]


class AuditError(Exception):
    """The audit itself failed: its result would prove nothing."""


def say(message: str) -> None:
    print(f"[audit] {message}", flush=True)


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str

    @classmethod
    def of(cls, name: str, version: str) -> "Package":
        return cls(canonicalize_name(name), version)


# ---- the lock


def exported_packages(project: Path = ROOT) -> set[Package]:
    """Every package of the lock, all groups and platforms, as `uv export` lists them."""
    text = run_uv(
        "export", "--locked", "--all-groups", "--no-hashes", "--no-emit-project",
        "--format", "requirements-txt", "--quiet", cwd=project,
    )  # fmt: skip
    return parse_requirements(text)


def parse_requirements(text: str) -> set[Package]:
    packages = set()
    for line in text.splitlines():
        requirement = line.split(";", 1)[0].strip()
        if not requirement or requirement.startswith(("#", "-")):
            continue
        name, separator, version = requirement.partition("==")
        if not separator:
            raise AuditError(f"not a pinned requirement in the export: {line!r}")
        packages.add(Package.of(name, version.strip()))
    return packages


def run_uv(*args: str, cwd: Path, ok: Sequence[int] = (0,)) -> str:
    result = subprocess.run(["uv", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode not in ok:
        raise AuditError(f"uv {args[0]} exited {result.returncode}:\n{result.stderr.strip()}")
    return result.stdout


# ---- the snapshot: safety-db's advisories as OSV records


@dataclass(frozen=True)
class Snapshot:
    version: str
    as_of: datetime.datetime
    records: list[OsvRecord]
    refused: list[str]  # "id spec": specs that match no release or do not parse

    def describe(self) -> str:
        return (
            f"{SNAPSHOT_PACKAGE} {self.version} ({SNAPSHOT_LICENSE}), advisories as of "
            f"{self.as_of:%Y-%m-%d}: {len(self.records):,} advisories"
            f" ({len(self.refused)} specs that match no release or do not parse, left out)"
        )


def install_snapshot(target: Path) -> Path:
    """The snapshot's data file, from a wheel uv verified against the pinned sha256."""
    requirements = target / "requirements.txt"
    requirements.write_text(
        f"{SNAPSHOT_PACKAGE}=={SNAPSHOT_VERSION} --hash=sha256:{SNAPSHOT_SHA256}\n"
    )
    run_uv(
        "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--target",
        str(target / "site"), "--requirement", str(requirements), cwd=target,
    )  # fmt: skip
    return target / "site" / "safety_db" / "insecure_full.json"


def load_snapshot(path: Path, version: str = SNAPSHOT_VERSION) -> Snapshot:
    data: dict[str, Any] = json.loads(path.read_text())
    meta = data.pop("$meta")
    as_of = datetime.datetime.fromtimestamp(meta["timestamp"], datetime.UTC)
    records: list[OsvRecord] = []
    refused: list[str] = []
    for name, advisories in data.items():
        for advisory in advisories:
            record = to_osv(name, advisory, as_of, refused)
            if record is not None:
                records.append(record)
    return Snapshot(version, as_of, records, refused)


class UnconvertibleSpecError(ValueError):
    pass


def to_osv(
    name: str, advisory: Mapping[str, Any], as_of: datetime.datetime, refused: list[str]
) -> OsvRecord | None:
    """One safety-db advisory as an OSV record: its specs become ranges and versions. Specs
    that cannot be converted go to `refused`; without any other, there is no record."""
    ranges, versions, converted = [], [], []
    for spec in advisory["specs"]:
        try:
            events, listed = spec_to_osv(spec)
        except UnconvertibleSpecError:
            refused.append(f"{advisory['id']} {spec}")
            continue
        converted.append(spec)
        if events:
            ranges.append({"type": "ECOSYSTEM", "events": events})
        versions.extend(listed)
    if not converted:
        return None
    text: str = advisory["advisory"]
    cves = [cve.strip() for cve in (advisory["cve"] or "").split(",") if cve.strip()]
    affected: dict[str, Any] = {
        "package": {"ecosystem": "PyPI", "name": canonicalize_name(name)},
        "ranges": ranges,
        "versions": versions,
        "database_specific": {"specs": converted},
    }
    return {
        "schema_version": "1.6.0",
        "id": advisory["id"],
        "modified": as_of.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aliases": cves,
        "summary": summary_of(text),
        "details": text,
        "affected": [affected],
        "references": [
            {"type": "ADVISORY", "url": f"https://nvd.nist.gov/vuln/detail/{cve}"} for cve in cves
        ],
    }


def summary_of(text: str, limit: int = 120) -> str:
    sentence = text.split(". ", 1)[0].strip()
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def spec_to_osv(spec: str) -> tuple[list[dict[str, str]], list[str]]:
    """A PEP 440 spec as OSV events (one range) or, for `==` only, listed versions.

    `>X` becomes `introduced: X`, which also flags X itself: OSV's lower bound is inclusive,
    and flagging one release too many is the safe side. A spec with two lower or two upper
    bounds, an empty range (`>=1.6,<1.6-beta-4`: OSV would read it as `>=1.6`) or an
    unparsable version has no OSV range: UnconvertibleSpecError.
    """
    clauses = [split_clause(part) for part in spec.split(",")]
    if all(op == "==" for op, _ in clauses):
        return [], [version for _, version in clauses]
    lowers = [(op, v) for op, v in clauses if op in (">=", ">")]
    uppers = [(op, v) for op, v in clauses if op in ("<", "<=")]
    if len(lowers) > 1 or len(uppers) > 1 or len(lowers) + len(uppers) != len(clauses):
        raise UnconvertibleSpecError(spec)
    lower = lowers[0][1] if lowers else "0"
    events = [{"introduced": lower}]
    if uppers:
        op, upper = uppers[0]
        if Version(upper) < Version(lower) or (op == "<" and Version(upper) == Version(lower)):
            raise UnconvertibleSpecError(spec)
        events.append({"fixed" if op == "<" else "last_affected": upper})
    return events, []


def split_clause(clause: str) -> tuple[str, str]:
    clause = clause.strip()
    for op in ("<=", ">=", "==", "<", ">"):
        if clause.startswith(op):
            version = clause[len(op) :].strip()
            try:
                Version(version)
            except InvalidVersion as error:
                raise UnconvertibleSpecError(clause) from error
            return op, version
    raise UnconvertibleSpecError(clause)


# ---- OSV matching, as osv.dev does it for the PyPI ecosystem


def affects(record: OsvRecord, package: Package) -> bool:
    try:
        version = Version(package.version)
    except InvalidVersion:
        return False
    for affected in record["affected"]:
        if canonicalize_name(affected["package"]["name"]) != package.name:
            continue
        if any(Version(listed) == version for listed in affected.get("versions", [])):
            return True
        if any(in_range(range_["events"], version) for range_ in affected.get("ranges", [])):
            return True
    return False


def in_range(events: Iterable[Mapping[str, str]], version: Version) -> bool:
    """OSV's evaluation: walk the events in version order; the last one passed decides."""

    def at(event: Mapping[str, str]) -> Version:
        (value,) = event.values()
        return Version(value)

    vulnerable = False
    for event in sorted(events, key=at):
        if "introduced" in event:
            vulnerable = vulnerable or version >= at(event)
        elif version > at(event) or (version == at(event) and "fixed" in event):
            vulnerable = False  # fixed here, or the last affected was before
    return vulnerable


# ---- the local OSV service


@dataclass
class AdvisoryService:
    """What `uv audit --service-url` asks, answered from OSV records."""

    records: list[OsvRecord]
    queried: set[Package] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.by_id = {record["id"]: record for record in self.records}
        self.by_package: dict[str, list[OsvRecord]] = {}
        for record in self.records:
            for affected in record["affected"]:
                name = canonicalize_name(affected["package"]["name"])
                self.by_package.setdefault(name, []).append(record)

    def query(self, package: Package) -> list[OsvRecord]:
        with self._lock:
            self.queried.add(package)
        return [r for r in self.by_package.get(package.name, []) if affects(r, package)]

    def querybatch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        results = []
        for query in body["queries"]:
            package = Package.of(query["package"]["name"], query["version"])
            vulns = [{"id": r["id"], "modified": r["modified"]} for r in self.query(package)]
            results.append({"vulns": vulns} if vulns else {})
        return {"results": results}


@contextmanager
def serve(service: AdvisoryService) -> Iterator[str]:
    """The service on 127.0.0.1, an ephemeral port, for the block; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/querybatch":
                return self.answer(404, {"message": "not found"})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.answer(200, service.querybatch(body))

        def do_GET(self) -> None:
            record = service.by_id.get(self.path.removeprefix("/v1/vulns/"))
            if not self.path.startswith("/v1/vulns/") or record is None:
                return self.answer(404, {"message": "Bug not found."})
            self.answer(200, record)

        def answer(self, status: int, body: Mapping[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            # Records change with the snapshot: uv must not answer from its cache.
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # shutdown() waits for the loop's next poll: 0.05 s rather than the default 0.5 s.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def osv_reachable(url: str = OSV_URL, timeout: float = OSV_PROBE_TIMEOUT) -> bool:
    query = {
        "queries": [{"package": {"name": CANARY[0], "ecosystem": "PyPI"}, "version": CANARY[1]}]
    }
    request = urllib.request.Request(
        f"{url}/v1/querybatch", data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return "results" in json.load(response)
    except (OSError, ValueError):  # URLError, timeouts and bad answers are OSErrors or JSON's
        return False


# ---- uv audit and the verdict


@dataclass(frozen=True)
class Finding:
    package: Package
    id: str
    summary: str
    fixed_in: tuple[str, ...]

    @classmethod
    def of(cls, vulnerability: Mapping[str, Any]) -> "Finding":
        """One entry of `uv audit --output-format json`."""
        dependency = vulnerability["dependency"]
        return cls(
            Package.of(dependency["name"], dependency["version"]),
            vulnerability["id"],
            vulnerability["summary"] or "",
            tuple(vulnerability["fix_versions"]),
        )

    def __str__(self) -> str:
        fix = f"fixed in {', '.join(self.fixed_in)}" if self.fixed_in else "no fix"
        return f"{self.package.name} {self.package.version}: {self.id} ({fix}) {self.summary}"


@dataclass(frozen=True)
class Report:
    audited: int
    findings: list[Finding]


def uv_audit(project: Path, service_url: str, *, locked: bool = True) -> Report:
    output = run_uv(
        "audit", "--locked" if locked else "--frozen", "--output-format", "json",
        "--preview-features", "audit-command,json-output", "--service-url", service_url,
        cwd=project, ok=(0, 1),  # 1: vulnerabilities found, read from the report
    )  # fmt: skip
    report = json.loads(output)
    findings = [Finding.of(v) for v in report["vulnerabilities"]]
    return Report(report["summary"]["audited_packages"], findings)


def audit(service_url: str, expected: set[Package], queried: set[Package] | None = None) -> int:
    """The canary, then the project; `queried` is what the local service was asked, if local."""
    canary = Package.of(*CANARY)
    flagged = [f.id for f in uv_audit(CANARY_PROJECT, service_url, locked=False).findings
               if f.package == canary]  # fmt: skip
    if not flagged:
        raise AuditError(
            f"the canary {canary.name}=={canary.version} was not flagged: this audit cannot "
            "see a vulnerability, its pass would prove nothing"
        )
    say(f"canary {canary.name}=={canary.version} flagged: {', '.join(sorted(flagged))}")
    if queried is not None:
        queried.clear()
    report = uv_audit(ROOT, service_url)
    check_coverage(expected, report.audited, queried)
    findings = [f for f in report.findings if f.id not in IGNORED]
    for finding_id in sorted({f.id for f in report.findings} & IGNORED.keys()):
        say(f"ignored {finding_id}: {IGNORED[finding_id]}")
    if findings:
        say(f"{len(findings)} known vulnerabilities in the locked dependencies:")
        for finding in sorted(findings, key=lambda f: (f.package, f.id)):
            print(f"  {finding}")
        return FINDINGS
    say(f"{report.audited} locked packages audited: no known vulnerability")
    return 0


def check_coverage(expected: set[Package], audited: int, queried: set[Package] | None) -> None:
    """Fewer packages audited than the lock exports: the rest passed unseen."""
    if audited < len(expected):
        raise AuditError(f"uv audited {audited} packages, the lock exports {len(expected)}")
    missing = expected - queried if queried is not None else set()
    if missing:
        names = ", ".join(f"{p.name}=={p.version}" for p in sorted(missing))
        raise AuditError(f"never asked about {len(missing)} locked packages: {names}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/audit", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--offline", action="store_true",
        help=f"use the pinned snapshot even when {OSV_URL} answers",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        expected = exported_packages()
        if args.offline:
            say("--offline: the pinned snapshot")
        elif osv_reachable():
            say(f"advisories: {OSV_URL} (live)")
            return audit(OSV_URL, expected)
        else:
            say(f"{OSV_URL} did not answer within {OSV_PROBE_TIMEOUT:g} s: the pinned snapshot")
        with tempfile.TemporaryDirectory(prefix="service-audit-") as scratch:
            snapshot = load_snapshot(install_snapshot(Path(scratch)))
        say(f"advisories: {snapshot.describe()}")
        service = AdvisoryService(snapshot.records)
        with serve(service) as url:
            return audit(url, expected, service.queried)
    except AuditError as error:
        say(f"error: {error}")
        return BROKEN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
