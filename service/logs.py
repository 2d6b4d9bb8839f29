"""JSON log lines on stdout, each with the request id of the request being served.

Lines logged on the event loop are written together once per loop iteration: every write to
stdout wakes the Docker engine's log copiers (containerd-shim, then dockerd), which cost
~120 us of CPU per write on the same cores as the app, whether it carries one line or sixteen
(docs/performance.md). Under load an iteration completes many requests, so their access lines
share one write; alone, a line is written at the end of its iteration, as before.

The app configures logging itself when it is created: Hypercorn sets up its own loggers only
after the lifespan has started, too late for start-up messages. hypercorn.toml hands
Hypercorn's loggers to the root logger configured here; its access records become fields.
"""

import asyncio
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


class LoopBatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines, when logged on a running event loop, are held until the
    end of the loop's current iteration and then written with one write. Lines from other
    threads, or with no loop running, are written at once (after any held ones, in order);
    logging.shutdown() at exit flushes what is held."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush waits on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # another thread, or no loop: in order, at once
            self._held.append(line)
            self.flush()
            return
        if self._flush_on is not loop:  # none pending, or on a loop that has gone
            self._flush_on = loop
            loop.call_soon(self.flush)
        self._held.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            if self._held:
                lines, self._held = "".join(self._held), []
                try:
                    self.stream.write(lines)
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": lines}))
            super().flush()


def configure_logging(level: str) -> None:
    """Adds one JSON handler on stdout to the root logger; other handlers are left alone."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers):
        handler = LoopBatchedStreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
