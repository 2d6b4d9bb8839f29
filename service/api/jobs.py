"""/jobs: enqueue background work and follow it."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from service.api.access import AUTHORIZED
from service.api.access import RESPONSES as GUARDED
from service.api.deps import ConnectionDep, JobServiceDep
from service.api.errors import UNAVAILABLE
from service.api.idempotency import RESPONSES as IDEMPOTENT
from service.api.idempotency import IdempotentDep, Outcome
from service.models import Job, JobCreate, Problem

router = APIRouter(
    prefix="/jobs", tags=["jobs"], dependencies=AUTHORIZED, responses=GUARDED | UNAVAILABLE
)

MAX_WAIT_SECONDS = 60  # below graceful_timeout: held by tests/unit/test_timeouts.py


@router.post("", response_model=Job, status_code=202, responses=IDEMPOTENT)
async def enqueue_job(
    data: JobCreate,
    idempotent: IdempotentDep,
    jobs: JobServiceDep,
    connection: ConnectionDep,
    request: Request,
) -> Response:
    async def enqueue() -> Outcome:
        job = await jobs.enqueue(data, connection)
        return Outcome(job, str(request.url_for("get_job", job_id=job.id)))

    return await idempotent(data, enqueue)


@router.get("/{job_id}", response_model=Job, status_code=200, responses={404: {"model": Problem}})
async def get_job(
    job_id: UUID,
    jobs: JobServiceDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Long-poll: seconds to wait for the job to finish.",
        ),
    ] = 0,
) -> Job:
    if wait > 0:
        return await jobs.wait(job_id, wait)
    return await jobs.get(job_id)
