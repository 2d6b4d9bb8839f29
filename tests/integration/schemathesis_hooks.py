"""Hooks for the schema fuzzing run (test_fuzz.py names this module in SCHEMATHESIS_HOOKS)."""

import sys
import uuid
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources

# By the schema a sleep job may last 600 s and a long-poll 60 s: the fuzzer's must not hold
# the job workers (and the tests after this one) or the run for minutes. Valid durations are
# shortened; nothing else is touched, and out-of-range values still reach the API as generated.
JOB_SECONDS = (0, 600, 0.2)  # schema minimum, maximum, what the fuzzer's jobs get
WAIT_SECONDS = (0, 60, 0.5)
IDEMPOTENCY_KEY = "Idempotency-Key"


def _shorten(container: object, key: str, bounds: tuple[float, float, float]) -> None:
    if not isinstance(container, dict):
        return
    value = container.get(key)
    low, high, short = bounds
    if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
        container[key] = min(value, short)


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case[Any], **_: Any) -> None:
    """Runs for every request of every phase (the map_* hooks skip the coverage phase)."""
    if case.operation.path == "/jobs" and case.method.upper() == "POST":
        payload = case.body.get("payload") if isinstance(case.body, dict) else None
        _shorten(payload, "seconds", JOB_SECONDS)
    elif case.operation.path == "/jobs/{job_id}":
        _shorten(case.query, "wait", WAIT_SECONDS)
    # The fuzzer draws few distinct keys and reuses them across different bodies, which the API
    # rightly refuses (422: one key, one request). A valid case gets a key of its own; invalid
    # keys of negative cases still reach the API as generated.
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.headers and IDEMPOTENCY_KEY in case.headers:
        case.headers[IDEMPOTENCY_KEY] = uuid.uuid4().hex


# CPython 3.11 before 3.11.8 can raise SystemError ("AST constructor recursion depth mismatch")
# from ast.parse deep in a call stack (python/cpython#106905). Hypothesis parses source there
# only to describe a lambda in a strategy's repr: describe it as unknown instead of failing.
if sys.version_info < (3, 11, 8):
    _describe_lambda: Callable[..., str] = lambda_sources._lambda_description

    def _describe_lambda_safely(*args: Any, **kwargs: Any) -> str:
        try:
            return _describe_lambda(*args, **kwargs)
        except SystemError:
            return "lambda: <unknown>"

    lambda_sources._lambda_description = _describe_lambda_safely
