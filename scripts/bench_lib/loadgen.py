"""The native load generators: wrk (HTTP/1.1) and h2load (HTTP/2), one thread each, run from the
project's tools image (tools/Dockerfile, tagged by scripts/tools-image): the host needs only
Docker.

Each run is timed by the generator itself. Its CPU share is measured inside its container: bash
runs it under the `time` keyword, which reports the generator's own run time and CPU time (user
+ system), so `docker run`'s start-up and teardown count in neither, and a saturated generator
is detected rather than guessed.
"""

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench_lib.model import RunResult, percentiles
from bench_lib.scenarios import ENCODINGS, authorization
from bench_lib.stack import ROOT

TOOLS_IMAGE = ROOT / "scripts" / "tools-image"  # prints the image's tag, building it if needed
IN_CONTAINER = "/work"  # the image's WORKDIR: each run's files are bind-mounted there
TIMEOUT_S = 10  # a request slower than this is a failure, not a latency figure

_STARTED = "BENCH_STARTED"
_TIMES = "BENCH_TIMES"
# In the container: a line when it is up, then a wait for the go on stdin (what is measured
# alongside reads its starting figures first: on a busy machine docker stats can take longer
# than a --quick run), then the generator, then a line with its run time, user and system CPU
# seconds (bash's `time`); the exit status is the generator's.
_TIMED = f'echo {_STARTED} >&2; read -r _; TIMEFORMAT="{_TIMES} %3R %3U %3S"; time "$@"'
_VERSIONS = "wrk -v 2>&1 | head -n 1; h2load --version"  # wrk -v exits 1


class ToolsUnavailable(RuntimeError):
    """No Docker, or the tools image could not be built."""


@dataclass(frozen=True)
class Tools:
    image: str  # the tools image's tag, e.g. service-tools:4ab87c2a2923

    @classmethod
    def find(cls) -> "Tools":
        if shutil.which("docker") is None:
            raise ToolsUnavailable(
                "docker not found: the load generators (wrk, h2load) run in the project's "
                "tools image, so the bench needs Docker (and uv) on this machine"
            )
        # Its progress and, on failure, the build's last lines go straight to stderr.
        done = subprocess.run([TOOLS_IMAGE], stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode:
            raise ToolsUnavailable(
                f"the tools image (tools/Dockerfile: wrk, h2load) is not available: "
                f"scripts/tools-image exited {done.returncode} (its output above)"
            )
        return cls(done.stdout.strip())

    def versions(self) -> dict[str, str]:
        command = [*_docker_run(None, None), self.image, "bash", "-c", _VERSIONS]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"the tools' versions: {done.stderr.strip()}")
        wrk, h2load = done.stdout.splitlines()
        return {"wrk": wrk.strip(), "h2load": h2load.strip(), "tools_image": self.image}


def _docker_run(workdir: Path | None, cpu: int | None, network: str = "host") -> list[str]:
    """`docker run` for a generator: host networking (the targets are loopback ports), or a
    target container's network namespace (`container:NAME`: no docker-proxy in the path)."""
    return [
        *("docker", "run", "--rm", "--pull=never", f"--network={network}"),
        *([f"--volume={workdir}:{IN_CONTAINER}"] if workdir else []),
        *([f"--cpuset-cpus={cpu}"] if cpu is not None else []),
    ]


@contextlib.contextmanager
def _shared_dir() -> Iterator[Path]:
    """A directory for the container's files: writable by its user (nobody, 65534), and inside a
    private one, so that no other user of this machine can reach it."""
    with tempfile.TemporaryDirectory() as private:
        shared = Path(private) / "run"
        shared.mkdir()
        shared.chmod(0o777)
        yield shared


def _timed(
    tools: Tools,
    workdir: Path,
    command: list[str],
    cpu: int | None,
    during: AbstractContextManager[object],
    network: str,
) -> tuple[str, float]:
    """Runs a generator to completion in the tools image: its output and CPU share (CPU time
    over its own run time). `during` is entered before the generator starts its load and left
    when it ends, so that what is measured alongside (docker stats) holds the whole load and
    leaves the container's life out."""
    name = f"bench-generator-{uuid.uuid4().hex[:12]}"
    docker = [*_docker_run(workdir, cpu, network), "--interactive", f"--name={name}", tools.image]
    with (
        tempfile.TemporaryFile("w+") as out,
        subprocess.Popen(
            [*docker, "bash", "-c", _TIMED, "bash", *command],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        ) as process,
    ):
        assert process.stdin is not None
        assert process.stderr is not None
        errors: list[str] = []
        times: list[float] | None = None
        try:
            with contextlib.ExitStack() as window:
                for line in process.stderr:
                    if line.strip() == _STARTED:
                        window.enter_context(during)
                        process.stdin.write("go\n")
                        process.stdin.close()
                    elif line.startswith(_TIMES + " "):
                        window.close()
                        times = [float(x) for x in line.split()[1:]]
                    else:
                        errors.append(line)
            returncode = process.wait()
        except BaseException:
            _remove(name, process)
            raise
        out.seek(0)
        output = out.read()
    if returncode or times is None:
        raise RuntimeError(f"{command[0]} failed ({returncode}): {''.join(errors).strip()}")
    wall, user, system = times
    return output, (user + system) / wall


def _remove(name: str, process: subprocess.Popen[str]) -> None:
    """Interrupted (Ctrl-C, SIGTERM): the container would go on without its client. A second
    signal (uv forwards one, a terminal signals the whole group) does not cut this short."""
    for _ in range(3):
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
            process.kill()
            process.wait()
            return


def wrk(
    tools: Tools,
    url: str,
    script: str,
    connections: int,
    duration: float,
    cpu: int | None,
    during: AbstractContextManager[object],
    network: str = "host",
) -> RunResult:
    with _shared_dir() as workdir:
        lua = workdir / "script.lua"
        lua.write_text(script)
        lua.chmod(0o644)
        output, cpu_share = _timed(
            tools,
            workdir,
            [
                "wrk",
                "--threads=1",
                f"--connections={connections}",
                f"--duration={max(1, round(duration))}s",
                f"--timeout={TIMEOUT_S}s",
                f"--script={IN_CONTAINER}/{lua.name}",
                url,
            ],
            cpu,
            during,
            network,
        )
    line = next((x for x in output.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return RunResult(
        requests=raw["requests"],
        failed=raw["status"] + errors,
        duration_s=raw["duration_us"] / 1e6,
        latency_ms={k: raw[k] / 1000 for k in ("p50", "p90", "p99", "max")},
        generator_cpu=cpu_share,
        generator_threads=1,
    )


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed"
)
_STATUSES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load(
    tools: Tools,
    base_url: str,
    paths: list[str],
    api_key: str | None,
    connections: int,
    streams: int,
    duration: float,
    cpu: int | None,
    during: AbstractContextManager[object],
    network: str = "host",
) -> RunResult:
    """HTTP/2 over TLS (ALPN h2), every request with `Authorization: Bearer <api_key>` (none
    when None); latency percentiles from h2load's per-request log."""
    auth = [f"--header=authorization: {authorization(api_key)}"] if api_key else []
    with _shared_dir() as workdir:
        log = "requests.tsv"  # written by the container
        output, cpu_share = _timed(
            tools,
            workdir,
            [
                "h2load",
                "--threads=1",
                f"--clients={connections}",
                f"--max-concurrent-streams={streams}",
                f"--duration={max(1, round(duration))}",
                f"--connection-inactivity-timeout={TIMEOUT_S}",
                f"--header=accept-encoding: {ENCODINGS}",
                *auth,
                f"--log-file={IN_CONTAINER}/{log}",
                *(base_url + path for path in paths),
            ],
            cpu,
            during,
            network,
        )
        rows = (workdir / log).read_text().splitlines()
        durations = [float(row.split("\t")[2]) for row in rows if row]
    finished, counts = _FINISHED.search(output), _REQUESTS.search(output)
    statuses = _STATUSES.search(output)
    if finished is None or counts is None or statuses is None:
        raise RuntimeError(f"h2load printed no result:\n{output}")
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    # h2load's `failed` includes `errored` and `timeout` (network-level failures); its
    # `succeeded` counts every answer, a 401 too: any answer but a 2xx is a failure here. (Its
    # status counts include answers still streaming when the run ended, which neither
    # `succeeded` nor `failed` counts: hence the bound.)
    succeeded, failed = int(counts[3]), int(counts[4])
    not_2xx = sum(int(count) for count in statuses.groups()[1:])
    return RunResult(
        requests=succeeded + failed,
        failed=failed + min(succeeded, not_2xx),
        duration_s=seconds,
        latency_ms=percentiles(durations),
        generator_cpu=cpu_share,
        generator_threads=1,
    )
