"""Job handlers: a job's ``kind`` names one, its ``payload`` is validated by the handler's model.

To add a kind: write a payload model and an async function, and register both in HANDLERS
(or pass your own mapping to ``create_app(handlers=...)``). Delivery is at-least-once: a job
interrupted by a shutdown or a crash runs again from the start, so handlers must be idempotent.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class JobHandler:
    payload_model: type[BaseModel]
    run: Callable[[Any], Awaitable[dict[str, Any]]]


class SleepPayload(BaseModel):
    # As request bodies (models.StrictInput): a number is a number, not ``true`` or ``"1"``.
    model_config = ConfigDict(strict=True)

    seconds: float = Field(ge=0, le=600, description="How long the job takes.")
    fail: bool = Field(False, description="Raise instead of finishing (to exercise retries).")


class SleepFailed(RuntimeError):
    pass


async def sleep(payload: SleepPayload) -> dict[str, Any]:
    """The example handler: its duration is part of its payload, so tests can hold it open."""
    await asyncio.sleep(payload.seconds)
    if payload.fail:
        raise SleepFailed("the payload asked this job to fail")
    return {"slept": payload.seconds}


DEFAULT_HANDLERS: Mapping[str, JobHandler] = {"sleep": JobHandler(SleepPayload, sleep)}
