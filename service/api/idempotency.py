"""The Idempotency-Key request header (draft-ietf-httpapi-idempotency-key-header) on the routes
that change something: parsed and documented here, enforced by domain/idempotency.py."""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, WithJsonSchema

from service.api.access import CallerDep
from service.api.deps import IdempotencyServiceDep
from service.domain.idempotency import KeyedRequest, fingerprint
from service.models import Problem, StoredResponse

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The draft's sf-string (quoted, with \" and \\ escapes), or the bare value most clients send:
# 1 to 255 printable ASCII characters either way. A bare value cannot start with a quote, so
# the two never overlap.
KEY_PATTERN = r'^(?:[!#-~](?:[ -~]{0,253}[!-~])?|"(?:[ !#-\[\]-~]|\\["\\]){1,255}")$'
_KEY = re.compile(KEY_PATTERN)
_ESCAPE = re.compile(r'\\(["\\])')

DESCRIPTION = (
    "Makes the request safe to retry (IETF draft-ietf-httpapi-idempotency-key-header): a value "
    "unique to the intended operation, 1 to 255 printable ASCII characters, as a Structured "
    'Field string (`"..."`) or bare. The first successful response is stored for '
    "`APP_IDEMPOTENCY_KEY_TTL` seconds (a day by default) and replayed, with "
    f"`{REPLAYED_HEADER}: true`, to every repeat with the same key, API key, method, path and "
    "body: "
    "the operation runs once. The key on another request is a 422; a repeat while the first "
    "is still in progress, a 409. Failed attempts are not stored."
)

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": f"A malformed {HEADER} header."},
    409: {
        "model": Problem,
        "description": f"Conflict, such as a request with this {HEADER} still in progress.",
    },
    422: {
        "model": Problem,
        "description": f"Validation error, or an {HEADER} already used for another request.",
    },
}


def idempotency_key(
    value: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "pattern": KEY_PATTERN}),
        Header(alias=HEADER, description=DESCRIPTION),
    ] = None,
) -> str | None:
    """The key, unquoted; None without the header."""
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise HTTPException(
            400,
            f"the {HEADER} header must be 1 to 255 printable ASCII characters, "
            "bare or as a quoted string",
        )
    return _ESCAPE.sub(r"\1", value[1:-1]) if value.startswith('"') else value


@dataclass(frozen=True)
class Outcome:
    """What a route's effect answers: its body (None for a 204) and Location."""

    body: BaseModel | None = None
    location: str | None = None


class Idempotent:
    """A route's response, with or without a key. The route passes its validated body and its
    effect, which must use the request's connection (every dependency of one request gets the
    same one): the effect and the stored response then share a transaction."""

    def __init__(
        self,
        request: Request,
        key: Annotated[str | None, Depends(idempotency_key)],
        service: IdempotencyServiceDep,
        caller: CallerDep,
    ) -> None:
        self._request = request
        self._key = key
        self._service = service
        self._caller = caller.name if caller else ""

    async def __call__(
        self, body: BaseModel | None, effect: Callable[[], Awaitable[Outcome]]
    ) -> Response:
        status: int = self._request.scope["route"].status_code  # as its decorator declares

        async def respond() -> StoredResponse:
            outcome = await effect()
            return StoredResponse(
                status=status,
                # As FastAPI renders a response_model: responses without a key are unchanged.
                body=None if outcome.body is None else outcome.body.model_dump_json(),
                location=outcome.location,
            )

        keyed = None
        if self._key is not None:
            # Only the fields sent: a PATCH of {} and of {"description": null} differ.
            data = None if body is None else body.model_dump(mode="json", exclude_unset=True)
            request = self._request
            keyed = KeyedRequest(
                self._key, fingerprint(self._caller, request.method, request.url.path, data)
            )
        response, replayed = await self._service.run(keyed, respond)
        headers = {"Location": response.location} if response.location else {}
        if replayed:
            headers[REPLAYED_HEADER] = "true"
        # application/json even on a 204, as FastAPI sends it.
        return Response(response.body, response.status, headers, "application/json")


IdempotentDep = Annotated[Idempotent, Depends()]
