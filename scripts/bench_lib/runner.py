"""The runner: warm-up, then a measured run per cell, rounds interleaved, docker stats alongside."""

import contextlib
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench_lib import loadgen, pyclients
from bench_lib.model import RunResult
from bench_lib.plan import Cell, Profile
from bench_lib.scenarios import h2load_paths, wrk_script
from bench_lib.stack import DockerStats, Progress

H2_STREAMS_PER_CONNECTION = 8  # like a browser multiplexing a page's requests


@dataclass
class Context:
    tools: loadgen.Tools
    item_ids: list[int]
    api_key: str  # sent on every request but to an anonymous target; never written out
    ca_file: str
    containers: dict[str, str]  # for docker stats
    generator_cpu: int | None  # --pin: the CPU the generator runs on
    progress: Progress


@contextlib.contextmanager
def _affinity(cpu: int | None) -> Iterator[None]:
    """In-process (Python) clients honour --pin like the native generators (--cpuset-cpus)."""
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def run_once(
    cell: Cell,
    duration: float,
    context: Context,
    during: AbstractContextManager[object],
    delay_ms: float = 0,
) -> RunResult:
    """One run; `during` is entered when the load starts and left when it ends."""
    target, c, cpu = cell.target, cell.concurrency, context.generator_cpu
    key = None if target.anonymous else context.api_key
    if target.tool == "wrk":
        seed = random.randrange(2**31)
        script = wrk_script(cell.scenario, context.item_ids, seed, key, delay_ms)
        return loadgen.wrk(
            context.tools, target.url + "/", script, c, duration, cpu, during, target.network
        )
    paths = h2load_paths(cell.scenario, context.item_ids)
    if target.tool == "h2load":
        connections = max(1, c // H2_STREAMS_PER_CONNECTION)
        return loadgen.h2load(
            context.tools,
            target.url,
            paths,
            key,
            connections,
            c // connections,
            duration,
            cpu,
            during,
            target.network,
        )
    url = urlsplit(target.url)
    assert url.hostname is not None
    assert url.port is not None
    with _affinity(cpu), during:
        return pyclients.run(
            target.protocol, url.hostname, url.port, context.ca_file, paths, key, c, duration
        )


def _cpu_times() -> tuple[int, int]:
    """The machine's (busy, total) CPU time so far, in clock ticks, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


# The engine's processes, by their command name (truncated to 15 characters by the kernel:
# containerd-shim-runc-v2 is "containerd-shim").
ENGINE_PROCESSES = frozenset({"docker-proxy", "dockerd", "containerd", "containerd-shim"})


def _engine_ticks() -> dict[str, int]:
    """CPU time so far (user + system, in clock ticks) of the engine's processes, by name, as
    /proc shows them: the Docker engine on this machine (nothing for a remote one)."""
    ticks: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in ENGINE_PROCESSES:
            fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
            ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
    return ticks


class _Alongside:
    """docker stats and the machine's CPU over the load itself: a generator's container
    starting and stopping (docker run) is left out of both."""

    def __init__(self, containers: dict[str, str]) -> None:
        self.stats = DockerStats(containers)
        self.host_cpu = 0.0
        self.engine_cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        busy, total = _cpu_times()
        engine, started = _engine_ticks(), time.monotonic()
        with self.stats:
            yield
        busy_after, total_after = _cpu_times()
        engine_after, elapsed = _engine_ticks(), time.monotonic() - started
        # Everything on the machine (the stack, the generator, anything else): near 1.0, the
        # box itself is the limit and no single container's figure explains the throughput.
        self.host_cpu = (busy_after - busy) / max(1, total_after - total)
        tick = os.sysconf("SC_CLK_TCK")
        self.engine_cpu = {
            name: round((engine_after[name] - engine.get(name, 0)) / tick / elapsed, 3)
            for name in engine_after
        }


def _measured(cell: Cell, duration: float, context: Context, delay_ms: float = 0) -> RunResult:
    """One run with docker stats and the machine's CPU recorded alongside."""
    alongside = _Alongside(context.containers)
    result = run_once(cell, duration, context, alongside.during(), delay_ms)
    result.stats = alongside.stats.summary()
    result.host_cpu = alongside.host_cpu
    result.engine_cpu = alongside.engine_cpu
    return result


def measure(cell: Cell, profile: Profile, context: Context) -> RunResult:
    run_once(cell, profile.warmup, context, contextlib.nullcontext())
    return _measured(cell, profile.duration, context)


def run_plan(cells: list[Cell], profile: Profile, context: Context) -> dict[str, list[RunResult]]:
    """Every round runs every cell once (A B C A B C): drift hits all targets alike."""
    results: dict[str, list[RunResult]] = {cell.key: [] for cell in cells}
    total = len(cells) * profile.repetitions
    per_run = profile.warmup + profile.duration
    started = time.monotonic()
    for number in range(total):
        cell = cells[number % len(cells)]
        done = time.monotonic() - started
        remaining = (done / number * (total - number)) if number else total * per_run
        context.progress.note(
            f"[{number + 1}/{total}] round {number // len(cells) + 1}/{profile.repetitions} "
            f"{cell.scenario:<8} {cell.target.name:<13} c={cell.concurrency:<4} "
            f"(about {remaining / 60:.1f} min left)"
        )
        result = measure(cell, profile, context)
        results[cell.key].append(result)
        problems = "; ".join(result.invalid_reasons())
        context.progress.note(
            f"      {result.rps:9.0f} req/s  p50 {result.latency_ms['p50']:7.2f} ms  "
            f"p99 {result.latency_ms['p99']:7.2f} ms  failed {result.failed}  "
            f"generator CPU {result.generator_cpu:.0%}"
            + (f"  INVALID: {problems}" if problems else "")
        )
    return results


def soak(
    cell: Cell, total_s: float, rate: float, window_s: float, context: Context
) -> list[RunResult]:
    """The mixed scenario at a steady rate, in windows, to see drift, leaks and errors over time."""
    delay_ms = cell.concurrency * 1000 / rate
    windows: list[RunResult] = []
    started = time.monotonic()
    while (left := total_s - (time.monotonic() - started)) >= 1:
        result = _measured(cell, min(window_s, left), context, delay_ms)
        windows.append(result)
        context.progress.note(
            f"soak window {len(windows)}: {result.rps:.0f} req/s, "
            f"p99 {result.latency_ms['p99']:.1f} ms, failed {result.failed}, "
            f"{left / 60:.1f} min left"
        )
    if windows:
        rates = [w.rps for w in windows]
        context.progress.note(f"soak: median {statistics.median(rates):.0f} req/s")
    return windows
