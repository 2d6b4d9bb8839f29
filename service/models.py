"""Pydantic models: every request body and response the API speaks, and the rows behind them."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

BIGINT_MAX = 2**63 - 1
MAX_PRICE_CENTS = 10**12
# Postgres text cannot hold U+0000: refused by the schema (422), not by the database (500).
NO_NUL = r"^[^\x00]*$"


def _integral(value: object) -> object:
    """JSON has one number type: 3.0 is the integer 3 (so says JSON Schema); true, "3" are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer in a strict request body (StrictInput): exact JSON integers and integral floats.
Integer = Annotated[int, BeforeValidator(_integral)]


class StrictInput(BaseModel):
    """Request bodies reject unknown fields, so a typo is a 422, not silently ignored, and
    values of another JSON type than the schema's (``false`` or ``"1"`` for an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --- items -------------------------------------------------------------------------------------
class ItemCreate(StrictInput):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    description: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    price_cents: Integer = Field(ge=0, le=MAX_PRICE_CENTS)


class ItemUpdate(StrictInput):
    """Partial update: only the fields present are changed; description may be set to null."""

    # Optional, never null: the schema leaves null out (SkipJsonSchema), the validator refuses it.
    name: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] | SkipJsonSchema[None]
    ) = None
    description: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    # Constraints before the validator: after it, pydantic writes them into the schema as
    # "ge"/"le" instead of "minimum"/"maximum".
    price_cents: (
        Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS), BeforeValidator(_integral)]
        | SkipJsonSchema[None]
    ) = None

    @field_validator("name", "price_cents")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class Item(BaseModel):
    id: int
    name: str
    description: str | None
    price_cents: int
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    items: list[Item]
    next_after: int | None = Field(
        description="Pass as ?after= for the next page; null on the last page."
    )


# --- jobs --------------------------------------------------------------------------------------
JobState = Literal["queued", "running", "done", "failed"]


class JobCreate(StrictInput):
    kind: str = Field(min_length=1, max_length=100, examples=["sleep"])
    payload: dict[str, Any] = Field(default_factory=dict, examples=[{"seconds": 1.5}])
    max_attempts: Integer = Field(3, ge=1, le=20)


class Job(BaseModel):
    id: UUID
    kind: str
    payload: dict[str, Any]
    state: JobState
    attempts: int
    max_attempts: int
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ClaimedJob(BaseModel):
    id: UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    traceparent: str | None = None  # of the request that enqueued it, when traced


# --- idempotency -------------------------------------------------------------------------------
class StoredResponse(BaseModel):
    """A response as sent, kept to be replayed for a repeated Idempotency-Key."""

    status: int
    body: str | None = Field(description="The JSON text exactly as sent; None for a 204.")
    location: str | None


class IdempotencyRecord(StoredResponse):
    fingerprint: str


# --- API keys ----------------------------------------------------------------------------------
class Scope(StrEnum):
    """What a key may do; api/access.py says which route needs which."""

    ITEMS_READ = "items:read"
    ITEMS_WRITE = "items:write"
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"


# Shown in access logs and metrics: short, and safe in a label (0005_api_keys.sql checks it too).
KEY_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class ApiKey(BaseModel):
    """A key as listed: never the key itself, nor its digest."""

    name: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class StoredKey(BaseModel):
    """What authenticating a key needs."""

    digest: bytes
    name: str
    scopes: frozenset[Scope]
    expires_at: datetime | None


# --- operations --------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"


class WhoAmI(BaseModel):
    """What the app sees of a request once the proxy chain has been applied."""

    client: str | None
    scheme: str
    host: str | None
    http_version: str
    url: str = Field(description="This endpoint's URL as the app generates it (url_for).")
    forwarding_headers: dict[str, str]


# --- errors (RFC 9457) -------------------------------------------------------------------------
class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
