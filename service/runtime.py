"""What the process runs on, carried by one object from the app factory to the routes.

`Process` is what exists before the app serves: main.py builds it, its middleware and the
lifespan share it. The lifespan opens the pool and yields a `Runtime`, the same parts and what
needs the pool, as Starlette lifespan state: routes reach it through api/deps.py.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from service.background.events import JobEvents
from service.background.handlers import JobHandler
from service.db.pool import Pool, Turns
from service.domain.keys import Authenticator
from service.domain.ratelimit import RateLimits
from service.draining import Draining
from service.metrics import Metrics
from service.settings import Settings
from service.tracing import Tracing


@dataclass(frozen=True)
class Process:
    """The parts made before the app serves."""

    settings: Settings
    handlers: Mapping[str, JobHandler]
    metrics: Metrics
    draining: Draining
    tracing: Tracing


@dataclass(frozen=True)
class Runtime(Process):
    """The process while it serves: its parts and those the lifespan made."""

    pool: Pool
    turns: Turns  # the pool, for requests
    events: JobEvents
    authenticator: Authenticator
    rate_limits: RateLimits


def lifespan_state(runtime: Runtime) -> dict[str, Runtime]:
    """What the lifespan yields: Starlette hands it to every request as `request.state`."""
    return {"runtime": runtime}


def runtime_of(request: Request) -> Runtime:
    """The Runtime in a request's lifespan state (`lifespan_state`)."""
    runtime: Runtime = request.state.runtime
    return runtime
