"""The HTTP layer: thin routers, their dependencies and the error responses."""

from fastapi import APIRouter

from service.api import items, jobs, operations
from service.api.access import check_route_scopes

ROUTERS = (operations.router, items.router, jobs.router)
check_route_scopes(ROUTERS)

router = APIRouter()
for included in ROUTERS:
    router.include_router(included)
