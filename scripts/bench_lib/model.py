"""What the bench measures: one load run's raw figures, and how a cell's runs are summarised."""

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

# A generator thread busier than this is the bottleneck: its figures say nothing of the server.
SATURATED_CPU_SHARE = 0.9


@dataclass
class RunResult:
    """One measured load run (after its warm-up), as the generator reported it."""

    requests: int  # completed responses, any status
    failed: int  # non-2xx/3xx responses, socket errors and timeouts
    duration_s: float
    latency_ms: dict[str, float]  # p50, p90, p99, max
    generator_cpu: float  # generator CPU time / wall time (1.0 = one core busy)
    generator_threads: int
    client_bound: bool = False  # a Python client: its own speed limits the figure, by design
    host_cpu: float = 0.0  # the whole machine's busy share of all its CPUs (1.0 = saturated)
    # The Docker engine's own processes on this machine, by name (1.0 = one core busy):
    # docker-proxy copies every byte to a published loopback port in user space.
    engine_cpu: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # docker stats per container

    @property
    def rps(self) -> float:
        return (self.requests - self.failed) / self.duration_s if self.duration_s else 0.0

    def invalid_reasons(self) -> list[str]:
        reasons = []
        if self.failed:
            reasons.append(f"{self.failed} failed requests")
        if self.requests == 0:
            reasons.append("no request completed")
        busy = self.generator_cpu / self.generator_threads
        if not self.client_bound and busy >= SATURATED_CPU_SHARE:
            reasons.append(f"load generator saturated its core ({busy:.0%} CPU)")
        return reasons

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 1), "invalid": self.invalid_reasons()}


def summarise(runs: list[RunResult]) -> dict[str, Any]:
    """Median and range over the repetitions; a cell is invalid when any of its runs is."""
    rates = [run.rps for run in runs]
    reasons = sorted({reason for run in runs for reason in run.invalid_reasons()})
    return {
        "rps_median": round(statistics.median(rates), 1),
        "rps_min": round(min(rates), 1),
        "rps_max": round(max(rates), 1),
        "latency_ms": {
            name: round(statistics.median(run.latency_ms[name] for run in runs), 2)
            for name in ("p50", "p90", "p99")
        }
        | {"max": round(max(run.latency_ms["max"] for run in runs), 2)},
        "requests": sum(run.requests for run in runs),
        "failed": sum(run.failed for run in runs),
        "generator_cpu_max": round(max(run.generator_cpu for run in runs), 2),
        "host_cpu_max": round(max(run.host_cpu for run in runs), 2),
        "engine_cpu_max": {
            name: round(max(run.engine_cpu.get(name, 0.0) for run in runs), 2)
            for name in sorted({name for run in runs for name in run.engine_cpu})
        },
        "client_bound": any(run.client_bound for run in runs),
        "valid": not reasons,
        "invalid_reasons": reasons,
    }


def percentiles(samples_us: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds from per-request durations in microseconds."""
    if not samples_us:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples_us)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1] / 1000}
