"""The HTTP layer: thin routers, their dependencies and the error responses."""

from fastapi import APIRouter

from service.api import health, items, jobs

router = APIRouter()
router.include_router(health.router)
router.include_router(items.router)
router.include_router(jobs.router)
