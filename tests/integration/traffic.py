"""A steady stream of requests through the edge, over HTTP/1.1 and HTTP/2 at once, recording
every outcome: what rolling restarts and deploys must get through without a failure."""

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from tests.integration.stack import Stack


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the response (or error) came back
    ok: bool
    detail: str  # the body's "version" for /healthz, else status and the start of the body


@dataclass
class SteadyTraffic:
    stack: Stack
    path: str
    pause: float = 0.02
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(http2,), daemon=True)
            for http2 in (False, True)
        ]

    def __enter__(self) -> "SteadyTraffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _send(self, http2: bool) -> None:
        with self.stack.client(http2=http2) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.path)
                    ok = response.status_code == 200
                    detail = (
                        str(response.json().get("version"))
                        if ok and self.path == "/healthz"
                        else f"{response.status_code} {response.text[:80]}"
                    )
                    self.outcomes.append(Outcome(time.monotonic(), ok, detail))
                except httpx.HTTPError as error:
                    self.outcomes.append(Outcome(time.monotonic(), False, repr(error)))
                time.sleep(self.pause)

    @property
    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def summary(self) -> str:
        return f"{len(self.outcomes)} requests, {len(self.failures)} failed"
