"""One error shape for every 4xx and 5xx: RFC 9457 problem details (application/problem+json).

Validation errors list their fields; an unreachable database is a 503 with Retry-After; an
unexpected error is a bare 500 (logged with its traceback, never sent to the client).
"""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from service.db.errors import DATABASE_UNAVAILABLE
from service.domain.errors import (
    Conflict,
    InvalidInput,
    InvalidKey,
    MissingScope,
    NotFound,
    Unauthenticated,
)
from service.models import FieldError, Problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# RFC 6750 section 3: the challenge of every 401 and 403 of a route that needs an API key.
BEARER_REALM = 'Bearer realm="service"'
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


# The 503 of every route that needs the database, for the OpenAPI document.
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "The database is unreachable (or the app is draining): retry later.",
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        },
    }
}


class ServiceUnavailable(Exception):
    """Raised by a route that cannot serve right now (answered with 503 and Retry-After)."""


def allowed_methods(request: Request) -> str:
    """Every method the request's path answers to, for a 405's Allow header.

    Starlette's own 405 names only the methods of the first route on the path, and
    /items/{item_id} has one route per method: ask the whole router about each method.
    """
    allowed = []
    for method in HTTP_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def problem(
    request: Request,
    status: int,
    detail: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type=PROBLEM_JSON,
    )


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    retry_after = {"Retry-After": str(retry_after_seconds)}

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        detail = None if error.detail == HTTPStatus(error.status_code).phrase else str(error.detail)
        headers = dict(error.headers or {})
        if error.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            headers["Allow"] = allowed_methods(request)
        return problem(request, error.status_code, detail, headers=headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        fields = [
            FieldError(loc=list(e["loc"]), msg=e["msg"], type=e["type"]) for e in error.errors()
        ]
        return problem(request, 422, "the request is not valid", fields)

    async def invalid_input(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, InvalidInput)
        return problem(request, 422, "the request is not valid", error.errors)

    async def unauthenticated(request: Request, error: Exception) -> JSONResponse:
        challenge = BEARER_REALM
        if isinstance(error, InvalidKey):
            challenge += ', error="invalid_token"'
        return problem(request, 401, str(error), headers={"WWW-Authenticate": challenge})

    async def missing_scope(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, MissingScope)
        challenge = f'{BEARER_REALM}, error="insufficient_scope", scope="{error.scope}"'
        return problem(request, 403, str(error), headers={"WWW-Authenticate": challenge})

    async def not_found(request: Request, error: Exception) -> JSONResponse:
        return problem(request, 404, str(error))

    async def conflict(request: Request, error: Exception) -> JSONResponse:
        return problem(request, 409, str(error))

    async def unavailable(request: Request, error: Exception) -> JSONResponse:
        detail = str(error) if isinstance(error, ServiceUnavailable) else "database unreachable"
        log.warning("service unavailable", extra={"reason": repr(error)})
        return problem(request, 503, detail, headers=retry_after)

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette logs the traceback and re-raises after this response is sent.
        return problem(request, 500)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(Unauthenticated, unauthenticated)
    app.add_exception_handler(MissingScope, missing_scope)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(ServiceUnavailable, unavailable)
    for error_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_type, unavailable)
    app.add_exception_handler(Exception, unexpected)
