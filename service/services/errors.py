"""Domain errors raised by the services; the API maps each to one HTTP status."""

from service.models import FieldError


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class InvalidInput(Exception):
    """Input that passed the schema but not the service's rules (answered with 422)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors)
        self.errors = errors
