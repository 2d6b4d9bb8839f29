"""Schema fuzzing: Schemathesis generates requests from the service's own OpenAPI document and
sends them through Caddy over verified HTTPS, on every operation, and holds every response to
the document: no 5xx, the documented status codes, content types, headers and bodies (every
error in the problem-details shape), valid data accepted and invalid data refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stack import Stack
from tests.project import ROOT

# Per operation and phase; with the fixed seed a run takes about half a minute on two cores.
EXAMPLES = 300
SEED = 20260601


@pytest.fixture(scope="module")
def stack(abuse_stack: Stack) -> Stack:
    return abuse_stack


def test_every_operation_conforms_to_the_openapi_document(stack: Stack, tmp_path: Path) -> None:
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run"),
        f"{stack.base_url}/openapi.json",
        *("--tls-verify", str(stack.ca_file)),
        # A key of every scope, as a client sends it; the ignored_auth check ("all") also
        # sends each operation without it and with a wrong one, and expects the 401.
        *("--header", f"Authorization: {stack.authorization}"),
        *("--checks", "all"),
        # "all" includes a response-time check (10 s by default): bound it by the proxy's
        # write timeout instead, so that it catches hangs and never judges speed.
        *("--max-response-time", "90"),
        *("--max-examples", str(EXAMPLES)),
        *("--seed", str(SEED)),
        *("--workers", "2"),
        *("--request-timeout", "95"),
        *("--report", "junit"),
        *("--report-dir", str(tmp_path)),
        "--output-truncate=false",
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
    }
    # Run from a scratch directory: Schemathesis and Hypothesis keep caches in the cwd.
    result = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=540
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
