"""Domain errors raised by the services; the API maps each to one HTTP status."""

from service.models import FieldError, Scope


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class InvalidInput(Exception):
    """Input that passed the schema but not the service's rules (answered with 422)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors)
        self.errors = errors


class Unauthenticated(Exception):
    """No API key, where the route needs one (401)."""


class InvalidKey(Unauthenticated):
    """A key that is unknown, revoked, expired or malformed (401, error="invalid_token")."""


class MissingScope(Exception):
    """A valid key without the scope the route needs (403)."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(f"this API key lacks the scope {scope}")
        self.scope = scope
