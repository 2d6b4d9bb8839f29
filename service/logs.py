"""JSON log lines on stdout, each with the request id of the request being served.

The app configures logging itself when it is created: Hypercorn sets up its own loggers only
after the lifespan has started, too late for start-up messages. hypercorn.toml hands
Hypercorn's loggers to the root logger configured here; its access records become fields.
"""

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

# Hypercorn access-log atoms -> our field names.
_ACCESS_FIELDS = {
    "h": "peer",
    "{x-forwarded-for}i": "forwarded_for",
    "m": "method",
    "U": "path",
    "s": "status",
    "B": "bytes",
    "H": "protocol",
    "D": "duration_us",
    "{x-request-id}i": "request_id",
    "a": "user_agent",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name == "hypercorn.access" and isinstance(record.args, Mapping):
            line["message"] = "request"
            for atom, field in _ACCESS_FIELDS.items():
                value = record.args.get(atom)
                if value not in (None, "", "-"):
                    line[field] = value
        else:
            line["message"] = record.getMessage()
            current_request = request_id.get()
            if current_request is not None:
                line["request_id"] = current_request
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """Adds one JSON handler on stdout to the root logger; other handlers are left alone."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
