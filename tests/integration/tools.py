"""Independent third-party clients (tools/Dockerfile: curl with HTTP/3, h2load, wrk), run from
the tools image on the host's network against the stack's loopback ports, trusting only
Caddy's local root."""

import re
import subprocess
import threading
from dataclasses import dataclass

from tests.integration.stack import Stack
from tests.project import ROOT

CA_IN_TOOLS = "/work/caddy-root.crt"
H2LOAD_COUNTS = re.compile(
    r"requests: (?P<total>\d+) total, \d+ started, (?P<done>\d+) done, "
    r"(?P<succeeded>\d+) succeeded"
)
# What the h2load checks read: three paths, no body.
READS = ("/healthz", "/items?limit=5", "/whoami")


@dataclass(frozen=True)
class Tools:
    image: str

    @classmethod
    def build(cls) -> "Tools":
        """The image, built on first use (scripts/tools-image is the one home of its tag)."""
        done = subprocess.run(
            [ROOT / "scripts" / "tools-image"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return cls(done.stdout.strip())

    def run(self, stack: Stack, *command: str, timeout: float = 60, check: bool = True) -> str:
        """Runs a client to completion; its standard output (it must exit 0 if `check`)."""
        docker = ["docker", "run", "--rm", "--network", "host"]
        mount = ["--volume", f"{stack.ca_file}:{CA_IN_TOOLS}:ro"]
        done = subprocess.run(
            [*docker, *mount, self.image, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0 or not check, (
            f"{command[0]} exited {done.returncode}: {done.stderr}"
        )
        return done.stdout

    def curl(self, stack: Stack, *options: str, urls: list[str]) -> list[str]:
        """curl, verifying against Caddy's root: the HTTP version it used for each URL, in
        order. Several URLs are transfers of one curl run (one Alt-Svc cache)."""
        command = ["curl", "--silent", "--show-error", "--fail", "--cacert", CA_IN_TOOLS]
        command += ["--header", f"Authorization: {stack.authorization}"]
        command += ["--write-out", r"%{http_version}\n", *options]
        for url in urls:
            command += ["--output", "/dev/null", url]
        return self.run(stack, *command).split()

    def h2load_reads(self, stack: Stack, requests: int, clients: int) -> str:
        """h2load over HTTP/2 (8 streams per connection) on READS: its report."""
        urls = [stack.base_url + path for path in READS]
        return self.run(
            stack, "h2load", f"--requests={requests}", f"--clients={clients}",
            "--max-concurrent-streams=8", f"--header=Authorization: {stack.authorization}", *urls,
        )  # fmt: skip


class H2Bursts:
    """Bursts of reads (READS) over HTTP/2, one after another until stopped: each burst is one
    curl run multiplexing its transfers, 8 at a time, over one connection. curl is the client
    here because it does what HTTP/2 asks of clients at a server's graceful GOAWAY: it finishes
    the streams the server took and sends the ones it refused again on a new connection
    (h2load counts those as failed, and httpx fails even the streams the server took)."""

    BURST = 300

    def __init__(self, stack: Stack, tools: Tools) -> None:
        self.stack, self.tools = stack, tools
        self.requests = self.failed = 0
        self.failures: list[str] = []  # the write-out lines of failed transfers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "H2Bursts":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        urls = [self.stack.base_url + READS[n % len(READS)] for n in range(self.BURST)]
        command = ["curl", "--silent", "--http2", "--parallel", "--parallel-max", "8"]
        command += ["--cacert", CA_IN_TOOLS, "--write-out", r"%{http_code} %{http_version}\n"]
        command += ["--header", f"Authorization: {self.stack.authorization}"]
        for url in urls:
            command += ["--output", "/dev/null", url]
        while not self._stop.is_set():
            answers = self.tools.run(self.stack, *command, check=False).splitlines()
            self.requests += self.BURST
            failed = [answer for answer in answers if answer != "200 2"]
            self.failed += len(failed) + self.BURST - len(answers)
            self.failures += failed

    def summary(self) -> str:
        return f"{self.requests} requests, {self.failed} failed {self.failures[:10]}"
