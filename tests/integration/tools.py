"""Independent third-party clients (tools/Dockerfile: curl with HTTP/3, h2load, wrk), run from
the tools image on the host's network against the stack's loopback ports, trusting only
Caddy's local root."""

import subprocess
from dataclasses import dataclass

from tests.integration.stack import Stack
from tests.project import ROOT

CA_IN_TOOLS = "/work/caddy-root.crt"


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

    def run(self, stack: Stack, *command: str, timeout: float = 60) -> str:
        """Runs a client to completion; its standard output (it must exit 0)."""
        docker = ["docker", "run", "--rm", "--network", "host"]
        mount = ["--volume", f"{stack.ca_file}:{CA_IN_TOOLS}:ro"]
        done = subprocess.run(
            [*docker, *mount, self.image, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"{command[0]} exited {done.returncode}: {done.stderr}"
        return done.stdout

    def curl(self, stack: Stack, *options: str, urls: list[str]) -> list[str]:
        """curl, verifying against Caddy's root: the HTTP version it used for each URL, in
        order. Several URLs are transfers of one curl run (one Alt-Svc cache)."""
        command = ["curl", "--silent", "--show-error", "--fail", "--cacert", CA_IN_TOOLS]
        command += ["--write-out", r"%{http_version}\n", *options]
        for url in urls:
            command += ["--output", "/dev/null", url]
        return self.run(stack, *command).split()
