"""Dependencies: how a route gets the runtime, a connection and its service object.

All are `async def`: FastAPI runs a plain `def` dependency in its threadpool, two thread round
trips per request for what is an attribute lookup."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.db.pool import Connection
from service.domain.idempotency import IdempotencyService
from service.domain.items import ItemService
from service.domain.jobs import JobService
from service.runtime import Runtime, runtime_of


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_connection(runtime: RuntimeDep) -> AsyncIterator[Connection]:
    async with runtime.turns.acquire(runtime.settings.db_acquire_timeout) as connection:
        yield connection


ConnectionDep = Annotated[Connection, Depends(get_connection)]


async def get_item_service(connection: ConnectionDep) -> ItemService:
    return ItemService(connection)


async def get_job_service(runtime: RuntimeDep) -> JobService:
    return JobService(
        runtime.turns,
        runtime.settings.db_acquire_timeout,
        runtime.events,
        runtime.handlers,
        runtime.tracing,
    )


async def get_idempotency_service(
    connection: ConnectionDep, runtime: RuntimeDep
) -> IdempotencyService:
    return IdempotencyService(
        connection, runtime.settings.idempotency_key_ttl, runtime.metrics.idempotency
    )


ItemServiceDep = Annotated[ItemService, Depends(get_item_service)]
JobServiceDep = Annotated[JobService, Depends(get_job_service)]
IdempotencyServiceDep = Annotated[IdempotencyService, Depends(get_idempotency_service)]
