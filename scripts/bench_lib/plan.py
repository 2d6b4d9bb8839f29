"""What a bench run measures: targets (a server behind a path and protocol) x scenarios x
concurrency, grouped as the report shows them."""

from dataclasses import dataclass, replace

from bench_lib.scenarios import SCENARIOS

GROUPS = ("paths", "auth", "docker-proxy", "peers", "baseline", "ceilings", "h3", "sweep")
# What authentication costs: GET /items/{id} direct (the app's work alone) from apps that differ
# only in one setting (compose.bench.yaml), next to paths/item/direct-h1 (a key, its lookup
# cached): a key looked up on every request, and public reads sent no key.
AUTH_SCENARIO = "item"
AUTH_TARGETS = ("direct-h1-uncached", "direct-h1-public")
# --baseline REF: REF's app behind its own Caddy, compared with the stack's (paths/.../caddy-h2).
BASELINE_SCENARIOS = ("healthz", "item")
# The same cells with the generator in the target container's network namespace: what the
# published loopback ports' userland proxy (docker-proxy) costs, which production clients,
# reaching Caddy through iptables DNAT, do not pay.
DOCKER_PROXY_SCENARIOS = ("item",)
APP_PORT = 8000  # the app's port in its container (hypercorn.toml's bind)


@dataclass(frozen=True)
class Profile:
    duration: float  # measured seconds per run
    warmup: float  # seconds of discarded load before each measured run
    repetitions: int  # rounds; every round runs every cell once (A B A B)
    concurrency: int  # requests in flight
    sweep: tuple[int, ...]  # extra concurrencies for GET /items/{id} through Caddy (HTTP/2)
    peer_scenarios: tuple[str, ...]


QUICK = Profile(2, 1, 1, 32, (), ("item",))
FULL = Profile(4, 1, 3, 32, (1, 8, 128, 256), ("healthz", "item"))


@dataclass(frozen=True)
class Target:
    name: str
    server: str  # hypercorn (the stack), uvicorn, granian, hypercorn@<sha12> (REF), a ceiling
    via: str  # what the client talks to: caddy or direct
    protocol: str  # h1, h2, h3
    tool: str  # wrk, h2load, py (Python client of equal cost; client-bound)
    url: str  # https://localhost:PORT or http://127.0.0.1:PORT
    network: str = "host"  # the generator's network: the host's, or container:NAME's
    anonymous: bool = False  # sends no API key (an app with public reads)


@dataclass(frozen=True)
class Cell:
    group: str
    scenario: str
    target: Target
    concurrency: int

    @property
    def key(self) -> str:
        return f"{self.group}/{self.scenario}/{self.target.name}/c{self.concurrency}"


def targets(
    ports: dict[str, int],
    host: str,
    baseline_server: str = "",
    containers: dict[str, str] | None = None,
) -> dict[str, Target]:
    """Every target whose service has a published port (the bench stack has them all; the
    baseline's edge only with --baseline, whose server is named hypercorn@<sha12>), and, for
    the services whose container is known (`containers`: service -> name), the same paths from
    inside that container's network namespace."""
    https = {s: f"https://{host}:{p}" for s, p in ports.items()}
    http = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    inside = {s: f"container:{name}" for s, name in (containers or {}).items() if s in ports}
    candidates = [
        ("proxy", Target("caddy-h1", "hypercorn", "caddy", "h1", "wrk", https.get("proxy", ""))),
        ("proxy", Target("caddy-h2", "hypercorn", "caddy", "h2", "h2load", https.get("proxy", ""))),
        ("app", Target("direct-h1", "hypercorn", "direct", "h1", "wrk", http.get("app", ""))),
        (
            "app-uncached",
            Target(
                "direct-h1-uncached",
                "hypercorn-uncached",
                "direct",
                "h1",
                "wrk",
                http.get("app-uncached", ""),
            ),
        ),
        (
            "app-public",
            Target(
                "direct-h1-public",
                "hypercorn-public",
                "direct",
                "h1",
                "wrk",
                http.get("app-public", ""),
                anonymous=True,
            ),
        ),
        (
            "proxy-uvicorn",
            Target(
                "uvicorn-h2", "uvicorn", "caddy", "h2", "h2load", https.get("proxy-uvicorn", "")
            ),
        ),
        (
            "proxy-granian",
            Target(
                "granian-h2", "granian", "caddy", "h2", "h2load", https.get("proxy-granian", "")
            ),
        ),
        (
            "proxy-baseline",
            Target(
                "baseline-h2",
                baseline_server,
                "caddy",
                "h2",
                "h2load",
                https.get("proxy-baseline", ""),
            ),
        ),
        (
            "ceiling-caddy",
            Target(
                "respond-h1", "caddy respond", "caddy", "h1", "wrk", https.get("ceiling-caddy", "")
            ),
        ),
        (
            "ceiling-caddy",
            Target(
                "respond-h2",
                "caddy respond",
                "caddy",
                "h2",
                "h2load",
                https.get("ceiling-caddy", ""),
            ),
        ),
        (
            "ceiling-asgi",
            Target(
                "bare-asgi-h1", "bare ASGI", "direct", "h1", "wrk", http.get("ceiling-asgi", "")
            ),
        ),
        ("proxy", Target("py-h2", "hypercorn", "caddy", "h2", "py", https.get("proxy", ""))),
        ("proxy", Target("py-h3", "hypercorn", "caddy", "h3", "py", https.get("proxy", ""))),
    ]
    if "proxy" in inside:  # Caddy listens on the port it publishes: the same URL, inside
        netns = Target("caddy-h2-netns", "hypercorn", "caddy", "h2", "h2load", https["proxy"])
        candidates.append(("proxy", replace(netns, network=inside["proxy"])))
    if "app" in inside:
        url = f"http://127.0.0.1:{APP_PORT}"
        netns = Target("direct-h1-netns", "hypercorn", "direct", "h1", "wrk", url)
        candidates.append(("app", replace(netns, network=inside["app"])))
    return {target.name: target for service, target in candidates if service in ports}


def build(
    profile: Profile, available: dict[str, Target], scenarios: list[str], groups: list[str]
) -> list[Cell]:
    """The cells in run order; each round runs them all, so targets alternate within a round."""
    c = profile.concurrency
    cells: list[Cell] = []

    def add(group: str, scenario: str, name: str, concurrency: int = c) -> None:
        if group in groups and name in available and scenario in scenarios:
            cells.append(Cell(group, scenario, available[name], concurrency))

    for scenario in scenarios:
        add("paths", scenario, "caddy-h1")
        if SCENARIOS[scenario].h2load:
            add("paths", scenario, "caddy-h2")
            if scenario in BASELINE_SCENARIOS:
                # In every profile, right after the cell it is compared with (same client and
                # concurrency): drift within a round hits HEAD's app and REF's alike.
                add("baseline", scenario, "baseline-h2")
            if scenario in DOCKER_PROXY_SCENARIOS:
                add("docker-proxy", scenario, "caddy-h2-netns")
        add("paths", scenario, "direct-h1")
        if scenario == AUTH_SCENARIO:  # right after the cell they are compared with
            for name in AUTH_TARGETS:
                add("auth", scenario, name)
        if scenario in DOCKER_PROXY_SCENARIOS:
            add("docker-proxy", scenario, "direct-h1-netns")
    for scenario in profile.peer_scenarios:
        add("peers", scenario, "uvicorn-h2")
        add("peers", scenario, "granian-h2")
    for name in ("respond-h1", "respond-h2", "bare-asgi-h1"):
        add("ceilings", "healthz", name)
    add("h3", "item", "py-h2")
    add("h3", "item", "py-h3")
    for concurrency in profile.sweep:
        add("sweep", "item", "caddy-h2", concurrency)
    return cells
