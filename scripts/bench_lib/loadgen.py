"""The native load generators: wrk (HTTP/1.1) and h2load (HTTP/2), one thread each.

Each run is timed by the generator itself; its CPU share comes from the kernel's accounting of
the child process, so a saturated generator is detected rather than guessed.
"""

import json
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_lib.model import RunResult, percentiles
from bench_lib.scenarios import ENCODINGS

INSTALL_HINT = (
    "scripts/bench needs wrk (HTTP/1.1) and h2load (HTTP/2) on this machine.\n"
    "  Debian/Ubuntu: apt-get install wrk nghttp2-client\n"
    "  Fedora:        dnf install wrk nghttp2\n"
    "  macOS:         brew install wrk nghttp2"
)
TIMEOUT_S = 10  # a request slower than this is a failure, not a latency figure


class MissingTool(RuntimeError):
    pass


@dataclass(frozen=True)
class Tools:
    wrk: str
    h2load: str
    taskset: str | None

    @classmethod
    def find(cls) -> "Tools":
        wrk, h2load = shutil.which("wrk"), shutil.which("h2load")
        if not wrk or not h2load:
            missing = " and ".join(n for n, p in (("wrk", wrk), ("h2load", h2load)) if not p)
            raise MissingTool(f"{missing} not found.\n{INSTALL_HINT}")
        return cls(wrk, h2load, shutil.which("taskset"))

    def versions(self) -> dict[str, str]:
        wrk = subprocess.run([self.wrk, "-v"], capture_output=True, text=True, check=False)
        h2load = subprocess.run([self.h2load, "--version"], capture_output=True, text=True)
        return {
            "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].strip(),
            "h2load": h2load.stdout.strip(),
        }


def _timed(command: list[str], cpu: int | None, tools: Tools) -> tuple[str, float, float]:
    """Runs a generator to completion: its output, wall time and CPU time (user + system)."""
    if cpu is not None:
        if tools.taskset is None:
            raise MissingTool("--pin needs taskset (Debian: util-linux)")
        command = [tools.taskset, "-c", str(cpu), *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_time = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout, wall, cpu_time


def wrk(
    tools: Tools, url: str, script: str, connections: int, duration: float, cpu: int | None
) -> RunResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        output, wall, cpu_time = _timed(
            [
                tools.wrk,
                "--threads=1",
                f"--connections={connections}",
                f"--duration={max(1, round(duration))}s",
                f"--timeout={TIMEOUT_S}s",
                f"--script={lua.name}",
                url,
            ],
            cpu,
            tools,
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
        generator_cpu=cpu_time / wall,
        generator_threads=1,
    )


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed"
)


def h2load(
    tools: Tools,
    base_url: str,
    paths: list[str],
    connections: int,
    streams: int,
    duration: float,
    cpu: int | None,
) -> RunResult:
    """HTTP/2 over TLS (ALPN h2); latency percentiles from h2load's per-request log."""
    with tempfile.TemporaryDirectory() as workdir:
        log = Path(workdir) / "requests.tsv"
        output, wall, cpu_time = _timed(
            [
                tools.h2load,
                "--threads=1",
                f"--clients={connections}",
                f"--max-concurrent-streams={streams}",
                f"--duration={max(1, round(duration))}",
                f"--connection-inactivity-timeout={TIMEOUT_S}",
                f"--header=accept-encoding: {ENCODINGS}",
                f"--log-file={log}",
                *(base_url + path for path in paths),
            ],
            cpu,
            tools,
        )
        durations = [float(row.split("\t")[2]) for row in log.read_text().splitlines() if row]
    finished, counts = _FINISHED.search(output), _REQUESTS.search(output)
    if finished is None or counts is None:
        raise RuntimeError(f"h2load printed no result:\n{output}")
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    # h2load's `failed` includes `errored` and `timeout` (network-level failures).
    succeeded, failed = int(counts[3]), int(counts[4])
    return RunResult(
        requests=succeeded + failed,
        failed=failed,
        duration_s=seconds,
        latency_ms=percentiles(durations),
        generator_cpu=cpu_time / wall,
        generator_threads=1,
    )
