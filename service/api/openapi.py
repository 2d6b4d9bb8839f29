"""The OpenAPI document as the API behaves, not as FastAPI guesses it.

FastAPI documents error responses as application/json (422 in its own shape) and a job's
payload as any object. The app sends every 4xx and 5xx as problem details (api/errors.py) and
validates a payload with its kind's handler, so the document says exactly that: clients, and
the schema fuzzing in tests/integration, can hold the API to it.
"""

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from fastapi import FastAPI

from service.api.access import READ_SCOPES, ROUTE_SCOPES, SECURITY_SCHEME
from service.api.errors import PROBLEM_JSON
from service.background.handlers import JobHandler

PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
SCHEMA_REF = "#/components/schemas/{model}"


def install_openapi(
    api: FastAPI, handlers: Mapping[str, JobHandler], public_reads: bool = False
) -> None:
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = generate()
            _errors_are_problems(document)
            _payloads_by_kind(document, handlers)
            _scopes(document, public_reads)
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _errors_are_problems(document: dict[str, Any]) -> None:
    for path in document["paths"].values():
        for operation in path.values():
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    response["content"] = PROBLEM
            # Caddy's errors (413, 414, 502...) and the app's unlisted ones share the shape.
            responses["default"] = {"description": "Any other error.", "content": PROBLEM}
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _payloads_by_kind(document: dict[str, Any], handlers: Mapping[str, JobHandler]) -> None:
    """JobCreate: one variant per kind, with that handler's payload schema."""
    schemas = document["components"]["schemas"]
    variants = []
    for kind, handler in sorted(handlers.items()):
        payload = handler.payload_model.model_json_schema(ref_template=SCHEMA_REF)
        schemas.update(payload.pop("$defs", {}))
        variant = deepcopy(schemas["JobCreate"])
        variant["title"] = f"JobCreate ({kind})"
        variant["properties"]["kind"] = {"const": kind, "title": "Kind"}
        variant["properties"]["payload"] = payload
        variant["required"] = ["kind", "payload"] if payload.get("required") else ["kind"]
        variants.append(variant)
    if variants:  # with no handlers, every job is refused: keep FastAPI's description
        schemas["JobCreate"] = {"title": "JobCreate", "oneOf": variants}


def _scopes(document: dict[str, Any], public_reads: bool) -> None:
    """Each operation names the scope it needs (FastAPI lists the scheme with none); a public
    read also allows no key at all (the empty requirement)."""
    for (method, path), scope in ROUTE_SCOPES.items():
        operation = document["paths"][path][method.lower()]
        requirements: list[dict[str, list[str]]] = [{SECURITY_SCHEME: [str(scope)]}]
        if public_reads and scope in READ_SCOPES:
            requirements.insert(0, {})
        operation["security"] = requirements
