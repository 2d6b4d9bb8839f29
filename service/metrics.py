"""Prometheus metrics, one registry per app (served at /metrics, which the edge never exposes)."""

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.db.pool import Pool

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_OUTCOMES = ("done", "retry", "failed", "released", "lease_lost")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the last body byte sent.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Keys are made by operators, so the names are few: a bounded label.
        self.requests_by_api_key = Counter(
            "http_requests_by_api_key_total",
            "HTTP requests by API key name (empty: none, or not a valid one) and status.",
            ["api_key", "status"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "jobs_finished_total",
            f"Job runs by kind and outcome ({', '.join(JOB_OUTCOMES)}).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.jobs_unfinished = Gauge(
            "jobs_unfinished",
            "Jobs queued or running, all replicas (refreshed every stats_interval).",
            ["state"],
            registry=self.registry,
        )
        self.jobs_oldest_queued_age = Gauge(
            "jobs_oldest_queued_age_seconds",
            "How long the longest-waiting runnable queued job has waited for a worker, since it "
            "became due (0: none due); all replicas (refreshed every stats_interval).",
            registry=self.registry,
        )
        self.ready = Gauge(
            "app_ready",
            "1 while this replica passes its readiness check (what GET /readyz answers), else 0 "
            "(refreshed every stats_interval).",
            registry=self.registry,
        )
        self.idempotency = Counter(
            "idempotency_requests_total",
            "Requests with an Idempotency-Key by outcome (stored, replayed, mismatch, in_flight).",
            ["outcome"],
            registry=self.registry,
        )
        self.wal_archived = Gauge(
            "postgres_wal_archived",
            "WAL segments archived since Postgres's statistics were reset (pg_stat_archiver).",
            registry=self.registry,
        )
        self.wal_archive_failed = Gauge(
            "postgres_wal_archive_failed",
            "Failed attempts to archive a WAL segment since the statistics were reset.",
            registry=self.registry,
        )
        self.wal_last_archived = Gauge(
            "postgres_wal_last_archived_timestamp_seconds",
            "When the last WAL segment was archived (0: never).",
            registry=self.registry,
        )
        self.wal_last_failed = Gauge(
            "postgres_wal_last_archive_failure_timestamp_seconds",
            "When archiving last failed (0: never); failing while newer than the last success.",
            registry=self.registry,
        )
        self.backup_last_success = Gauge(
            "backup_last_success_timestamp_seconds",
            "When the newest backup of each type finished (from the backup service).",
            ["type"],
            registry=self.registry,
        )
        self._pool_collector: PoolCollector | None = None

    def count_job_kinds(self, kinds: Iterable[str]) -> None:
        """Every kind's outcome series from zero, so that a rule's increase() sees a kind's
        first failure too (a series born at 1 has no increase)."""
        for kind in kinds:
            for outcome in JOB_OUTCOMES:
                self.jobs_finished.labels(kind, outcome)

    def watch_pool(self, pool: Pool) -> None:
        self.unwatch_pool()
        self._pool_collector = PoolCollector(pool)
        self.registry.register(self._pool_collector)

    def unwatch_pool(self) -> None:
        if self._pool_collector is not None:
            self.registry.unregister(self._pool_collector)
            self._pool_collector = None


class PoolCollector(Collector):
    """Read at scrape time: no I/O, just the pool's own counters."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterable[GaugeMetricFamily]:
        size = self._pool.get_size()
        idle = self._pool.get_idle_size()
        yield GaugeMetricFamily("db_pool_connections", "Open pool connections.", value=size)
        yield GaugeMetricFamily("db_pool_in_use", "Connections checked out.", value=size - idle)
        yield GaugeMetricFamily("db_pool_max", "Pool size limit.", value=self._pool.get_max_size())
