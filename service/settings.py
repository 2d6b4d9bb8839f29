"""Settings, read once from the environment (prefix ``APP_``).

Every field can also come from a file named by ``APP_<FIELD>_FILE``: that is how Docker
secrets reach the app (``APP_DATABASE_PASSWORD_FILE=/run/secrets/db_password``).
"""

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "APP_"


class FileVariableSource(PydanticBaseSettingsSource):
    """Reads ``APP_<FIELD>_FILE`` variables: the value is the file's content, stripped."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().strip(), field_name, False
        except OSError as error:
            raise ValueError(f"{variable}={path} cannot be read: {error.strerror}") from error

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    version: str = Field("dev", description="Reported by /healthz; the image sets the commit.")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|debug|info|warning|error)$")
    access_log: bool = Field(
        True, description="One JSON line per request (off: Hypercorn's accesslog, or none)."
    )

    database_url: str = "postgresql://app@localhost:5432/app"
    database_password: SecretStr | None = Field(
        None, description="Overrides a password in database_url; use APP_DATABASE_PASSWORD_FILE."
    )
    database_password_file: Path | None = Field(
        None,
        description="The file database_password came from: read again for every new "
        "connection, so that a rotated password needs no restart (service/db/password.py).",
    )
    db_pool_min_size: int = Field(2, ge=0)
    db_pool_max_size: int = Field(10, ge=1)
    db_pool_max_queries: int = Field(
        50000,
        ge=1,
        description="A pooled connection is replaced after this many queries (asyncpg's "
        "max_queries): how long sessions opened before a password rotation live on.",
    )
    db_connect_timeout: float = Field(5.0, gt=0, description="One connection attempt, seconds.")
    db_startup_deadline: float = Field(
        60.0, gt=0, description="How long start-up retries the database before giving up."
    )
    db_acquire_timeout: float = Field(5.0, gt=0, description="Waiting for a pool connection.")
    db_command_timeout: float = Field(30.0, gt=0, description="One SQL statement, seconds.")
    db_close_timeout: float = Field(10.0, gt=0, description="Pool close at shutdown, seconds.")
    db_migration_lock_timeout: float = Field(
        3.0, gt=0, description="A migration waiting longer for a lock fails start-up (s)."
    )
    db_migration_statement_timeout: float = Field(
        60.0, gt=0, description="A migration statement running longer fails start-up (s)."
    )
    ready_timeout: float = Field(1.0, gt=0, description="The /readyz database ping, seconds.")
    request_body_timeout: float = Field(
        30.0, gt=0, description="A request body must arrive within this, or 408 (seconds)."
    )
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After sent with 503.")
    lame_duck_seconds: float = Field(
        5.0,
        ge=0,
        description="After SIGTERM, serve the connections already open this long (listener "
        "closed, readiness 503, Connection: close on every HTTP/1.1 response) before "
        "Hypercorn's graceful shutdown; longer than Caddy's upstream keep-alive (seconds; "
        "python -m service.server only).",
    )

    job_workers: int = Field(2, ge=0, description="Worker tasks per process (0: none).")
    job_lease_seconds: float = Field(
        30.0, gt=0, description="A claim's lease; renewed while running."
    )
    job_poll_interval: float = Field(1.0, gt=0, description="Idle workers look again this often.")
    job_release_timeout: float = Field(5.0, gt=0, description="Cancelled job's release, seconds.")

    public_reads: bool = Field(
        False,
        description="GET /items and /jobs without an API key (a key sent is still checked).",
    )
    api_key_cache_seconds: float = Field(
        10.0,
        ge=0,
        description="A key's lookup is reused this long per process: a revoked key stops "
        "working within it (0: a lookup per request).",
    )

    idempotency_key_ttl: float = Field(
        86400.0, gt=0, description="How long a response is replayed for its Idempotency-Key, s."
    )
    idempotency_purge_interval: float = Field(
        60.0, gt=0, description="Expired Idempotency-Key responses are deleted this often, s."
    )

    rate_limits: bool = Field(
        True, description="Token buckets per API key, or per client address for anonymous reads."
    )
    # Per replica: with N replicas behind Caddy's round robin a client gets up to N times these
    # (README "Rate limits" says why they are not shared).
    rate_limit_reads_per_second: float = Field(20.0, gt=0, description="Reads (GET, HEAD).")
    rate_limit_read_burst: int = Field(40, ge=1, description="Reads at once, after a pause.")
    rate_limit_writes_per_second: float = Field(5.0, gt=0, description="Every other method.")
    rate_limit_write_burst: int = Field(10, ge=1, description="Writes at once, after a pause.")
    rate_limit_max_identities: int = Field(
        100_000, ge=1, description="Remembered at once; past it the least recently seen goes."
    )

    trace_sql_parameters: bool = Field(
        False,
        description="With tracing on (OTEL_EXPORTER_OTLP_ENDPOINT), SQL spans also record the "
        "statements' parameters (they may hold personal data).",
    )

    supervisor_max_backoff: float = Field(30.0, gt=0, description="Crashed task restart cap, s.")
    stats_interval: float = Field(
        5.0, gt=0, description="Queue-depth and backup gauges refresh, seconds."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileVariableSource(settings_cls))
