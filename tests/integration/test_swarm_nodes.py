"""The stack on a Swarm of three real engines (issue 15): test hosts (tests/integration/hosts.py)
on a network of this module's own, one manager with the edge and two workers, one of them
the db node. Deployed only through scripts/deploy (DEPLOY_MODE=swarm, SWARM_NODES), over SSH,
as README's Swarm section says. Under the shared traffic: placement, a rolling update, scaling,
draining a worker, losing a worker and losing the db node; and the edge in host mode."""

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network

import docker
import pytest

from stack_facts import CA_IN_PROXY, eventually, read_env_file
from tests.integration.hosts import DockerHost, DockerHosts
from tests.integration.release import EDGE_D_HEADER, Release
from tests.integration.traffic import MixedTraffic, Outcome
from tests.project import ROOT

PROJECT = "service-swarmnodes"
REPOSITORY = "service-swarmnodes"
# Our own network, names and ports (64000-64999), beside test_remote_deploy's hosts.
NETWORK = "service-swarmhosts"
SUBNET = IPv4Network("10.64.0.0/24")
# Swarm's overlays come from 10.0.0.0/8 by default, which holds SUBNET: a pool that cannot.
ADDRESS_POOL = "10.201.0.0/16"
EDGE, DB, PLAIN = 0, 1, 2  # the manager (edge=true), a worker (db=true), a plain worker
REPLICAS = 3  # one per node, by the spread preference
APP = f"{PROJECT}_app"
# How long a client waits for an answer (Stack.client's timeout): a request stuck on a dead
# node fails after this.
CLIENT_TIMEOUT = 30
# Requests sent this long after a worker is lost must succeed: Swarm's gossip takes the
# dead node's tasks out of DNS and the edge retries what it could not connect to.
WORKER_LOSS_BOUND = 20
DB_OUTAGE_SECONDS = 25


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHosts]:
    started = time.monotonic()
    hosts = DockerHosts(
        tmp_path_factory.mktemp("swarmhosts"), count=3, network=NETWORK, subnet=SUBNET,
        prefix="service-swarmhost", http_port=64080, https_port=64443,
    )  # fmt: skip
    with hosts.running() as running:
        yield running
    print(f"\ntest_swarm_nodes: {time.monotonic() - started:.0f} s with its test hosts")


@dataclass
class Swarm:
    """The swarm the test hosts form, seen through the manager's engine (the harness's)."""

    hosts: list[DockerHost]
    # Each host's node ID, asked while it is up: a dead host's engine cannot say who it was.
    ids: dict[int, str] = field(default_factory=dict)

    @property
    def manager(self) -> docker.DockerClient:
        return self.hosts[EDGE].engine()

    def node(self, host: DockerHost) -> str:
        if host.index not in self.ids:
            self.ids[host.index] = str(host.engine().info()["Swarm"]["NodeID"])
        return self.ids[host.index]

    def cli(self, *args: str) -> str:
        """`docker ARGS` on the manager, as an operator there would type it."""
        socket = f"unix://{self.hosts[EDGE].socket_dir}/docker.sock"
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "DOCKER_HOST": socket}
        result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def running(self, service: str) -> Counter[int]:
        """How many of the service's tasks run on each host, by index."""
        index = {self.node(host): host.index for host in self.hosts}
        tasks = self.manager.api.tasks(
            filters={"service": f"{PROJECT}_{service}", "desired-state": "running"}
        )
        return Counter(
            index[task["NodeID"]] for task in tasks if task["Status"]["State"] == "running"
        )

    def app_without(self, host: DockerHost) -> bool:
        """Every app replica runs, none of them on `host`."""
        running = self.running("app")
        return running[host.index] == 0 and sum(running.values()) == REPLICAS

    def addresses(self, service: str, host: DockerHost) -> set[str]:
        """The addresses of the service's running tasks on `host`, on every network."""
        tasks = self.manager.api.tasks(
            filters={"service": f"{PROJECT}_{service}", "node": self.node(host)}
        )
        return {
            address.split("/")[0]
            for task in tasks
            if task["Status"]["State"] == "running"
            for attachment in task.get("NetworksAttachments", [])
            for address in attachment["Addresses"]
        }

    def node_state(self, host: DockerHost) -> str:
        return str(self.manager.nodes.get(self.node(host)).attrs["Status"]["State"])


@pytest.fixture(scope="module")
def swarm(hosts: DockerHosts) -> Swarm:
    manager, *workers = hosts.hosts
    manager.engine().swarm.init(
        advertise_addr=manager.address,
        listen_addr=f"{manager.address}:2377",
        default_addr_pool=[ADDRESS_POOL],
        subnet_size=24,
    )
    token = manager.engine().swarm.attrs["JoinTokens"]["Worker"]
    for worker in workers:
        worker.engine().swarm.join(
            remote_addrs=[f"{manager.address}:2377"],
            join_token=token,
            advertise_addr=worker.address,
            listen_addr=f"{worker.address}:2377",
        )
    formed = Swarm(hosts.hosts)
    for label, index in (("edge", EDGE), ("db", DB)):
        formed.cli(
            "node", "update", "--label-add", f"{label}=true", formed.node(hosts.hosts[index])
        )
    for host in hosts.hosts:
        formed.node(host)
    return formed


@pytest.fixture(scope="module")
def release(
    hosts: DockerHosts, swarm: Swarm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    edge, *workers = hosts.hosts
    env = {
        **read_env_file(ROOT / "deploy" / "staging.env"),
        "DEPLOY_MODE": "swarm",
        "DOCKER_HOST": edge.url,
        "SWARM_NODES": " ".join(worker.url for worker in workers),
        "SITE_ADDRESS": "localhost",
        "TLS": "internal",
        # Caddy binds these on the edge node (host mode), published on this machine's loopback.
        "HTTP_PORT": str(edge.http_port),
        "HTTPS_PORT": str(edge.https_port),
        "COMPOSE_PROJECT_NAME": PROJECT,
        "APP_IMAGE_REPOSITORY": REPOSITORY,
        "APP_REPLICAS": str(REPLICAS),
        "GRACEFUL_TIMEOUT": "15",
        "DEPLOY_HEALTH_TIMEOUT": "120",
    }
    prepared = Release.prepare(
        tmp_path_factory.mktemp("swarmnodes"), PROJECT, env, engine=edge.engine(),
        environ=hosts.environ(), nodes=[worker.engine() for worker in workers],
    )  # fmt: skip
    try:
        yield prepared
    finally:
        prepared.remove_artifacts(REPOSITORY)  # what the deploys built here


def deploy_timing_arrivals(
    release: Release, hosts: DockerHosts, commit: str
) -> subprocess.CompletedProcess[str]:
    """Deploys `commit`, printing when each image arrived on each node: the cost of shipping
    images to every node without a registry."""
    arrived: dict[tuple[int, str], float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            for host in hosts.hosts:
                for tag in tags(host):
                    arrived.setdefault((host.index, tag), time.monotonic())

    before = {(host.index, tag) for host in hosts.hosts for tag in tags(host)}
    watcher = threading.Thread(target=watch, daemon=True)
    started = time.monotonic()
    watcher.start()
    try:
        result = release.deploy("--commit", commit)
    finally:
        done.set()
        watcher.join()
    for (index, tag), at in sorted(arrived.items(), key=lambda item: item[1]):
        if (index, tag) not in before:
            print(f"  {tag} loaded on host {index} at +{at - started:.0f} s")
    print(f"deploy of {commit}: {time.monotonic() - started:.0f} s")
    return result


def tags(host: DockerHost) -> list[str]:
    return [tag for image in host.engine().images.list() for tag in image.tags]


def test_the_first_deploy_ships_to_every_node_and_places_the_tasks(
    release: Release, hosts: DockerHosts, swarm: Swarm
) -> None:
    a = release.commits["A"]
    result = deploy_timing_arrivals(release, hosts, a)
    assert result.returncode == 0
    for host in hosts.hosts:
        for image in (f"{REPOSITORY}:{a}", f"{REPOSITORY}-proxy:", f"{REPOSITORY}-db:"):
            assert f"sending {image}" in result.stdout
            assert f"to {host.url} (docker save | docker load)" in result.stdout
    assert result.stdout.count("(docker save | docker load)") == 9
    release.stack.copy_ca()
    release.stack.wait_until_serving(timeout=120)
    assert release.version() == a

    placement = {service: swarm.running(service) for service in ("app", "proxy", "db", "backup")}
    print(f"placement (tasks per host): {placement}")
    assert placement["app"] == Counter({EDGE: 1, DB: 1, PLAIN: 1}), "spread over the nodes"
    assert placement["proxy"] == Counter({EDGE: 1})
    assert placement["db"] == Counter({DB: 1})
    assert placement["backup"] == Counter({DB: 1})
    # The harness finds each task's container on its node's engine.
    assert len(release.stack.containers("app")) == REPLICAS


def test_the_edge_in_host_mode_sees_the_clients_address(
    release: Release, hosts: DockerHosts
) -> None:
    # Through a port published on loopback, the edge node's network namespace sees the
    # connection come from the test network's gateway; the routing mesh would show an
    # ingress address instead.
    with release.stack.client() as client:
        seen = client.get("/whoami").json()
    print(f"/whoami through the edge node: {seen}")
    assert seen["client"] == hosts.gateway


def test_a_rolling_update_under_traffic_fails_no_request(
    release: Release, hosts: DockerHosts
) -> None:
    a, b = release.commits["A"], release.commits["B"]
    rolled = release.deploy_under_traffic(b)
    print(f"rolling update: {rolled.finished - rolled.started:.0f} s")
    rolled.verify(a, b)
    assert rolled.result.stdout.count("(docker save | docker load)") == 3, "the app's, per node"
    for host in hosts.hosts:
        assert f"sending {REPOSITORY}:{b} to {host.url}" in rolled.result.stdout


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check` held (fails after `timeout`)."""
    started = time.monotonic()
    assert eventually(check, timeout, interval=0.5), f"not within {timeout} s: {what}"
    return time.monotonic() - started


def test_drain_a_worker_under_traffic_fails_no_request(
    release: Release, swarm: Swarm, hosts: DockerHosts
) -> None:
    plain = hosts.hosts[PLAIN]
    node = swarm.node(plain)
    assert swarm.running("app")[PLAIN] > 0
    with MixedTraffic(release.stack) as traffic:
        time.sleep(2)
        swarm.cli("node", "update", "--availability", "drain", node)
        moved = wait_for(
            "the drained node's tasks run elsewhere", lambda: swarm.app_without(plain), 120
        )
        time.sleep(3)
    swarm.cli("node", "update", "--availability", "active", node)
    print(f"drained: tasks moved in {moved:.0f} s: {swarm.running('app')}")
    traffic.verify()


def test_scale_out_and_back_under_traffic_fails_no_request(release: Release, swarm: Swarm) -> None:
    with MixedTraffic(release.stack) as traffic:
        for replicas in (2, 6, 2, REPLICAS):
            started = time.monotonic()
            swarm.cli("service", "scale", "--detach=false", f"{APP}={replicas}")
            took = time.monotonic() - started
            print(f"scaled to {replicas} in {took:.0f} s: {swarm.running('app')}")
            time.sleep(3)
            assert len(release.stack.containers("app")) == replicas
    traffic.verify()
    # Scaling out after the drain spread the app over every node again.
    assert len(swarm.running("app")) >= 2


def report(outcomes: list[Outcome], since: float, what: str) -> None:
    for outcome in outcomes:
        sent = outcome.at - outcome.seconds - since
        print(
            f"  {what}: sent at {sent:+.1f} s, answered at {outcome.at - since:+.1f} s: "
            f"{outcome.request} {outcome.status} {outcome.detail[:100]}"
        )


def test_losing_a_worker(release: Release, swarm: Swarm, hosts: DockerHosts) -> None:
    plain = hosts.hosts[PLAIN]
    if swarm.running("app")[PLAIN] == 0:
        # The drain left it empty and scaling kept it so: put a task back there.
        swarm.cli("service", "update", "--detach=false", "--force", APP)
    assert swarm.running("app")[PLAIN] > 0, swarm.running("app")
    # Its replica's sessions will send Postgres no goodbye; its keepalives (compose.yaml) end
    # them, and with them the locks of the transactions they had begun.
    dead_clients = ", ".join(repr(address) for address in swarm.addresses("app", plain))
    sessions = f"SELECT count(*) FROM pg_stat_activity WHERE host(client_addr) IN ({dead_clients})"
    assert release.stack.psql(sessions) != "0"
    try:
        with MixedTraffic(release.stack, resends=1) as traffic:
            time.sleep(3)
            killed = time.monotonic()
            plain.kill()
            rescheduled = wait_for(
                f"{REPLICAS} app tasks on the remaining nodes",
                lambda: swarm.app_without(plain),
                120,
            )
            down = wait_for("the node is down", lambda: swarm.node_state(plain) == "down", 60)
            ended = wait_for(
                "the dead replica's sessions end", lambda: release.stack.psql(sessions) == "0", 60
            )
            # Long enough for a request stuck on the dead node to time out and be resent.
            time.sleep(max(0.0, killed + CLIENT_TIMEOUT + 10 - time.monotonic()))
    finally:
        restarted = time.monotonic()
        plain.start()  # also when a check failed: the next tests need every node
    print(f"lost a worker: {traffic.summary()}")
    placed = swarm.running("app")
    print(f"  rescheduled {REPLICAS} tasks in {rescheduled:.0f} s after the kill: {placed}")
    print(f"  node marked down {rescheduled + down:.0f} s after the kill at the latest")
    print(f"  its Postgres sessions gone {rescheduled + down + ended:.0f} s after, at the latest")
    report(traffic.failures, killed, "failed")
    report([o for o in traffic.unexpected if not o.failed], killed, "unexpected")
    report(traffic.resent, killed, "no answer, resent")
    report(traffic.in_progress, killed, "409 in progress, asked again")
    late = [o for o in traffic.failures if o.at - o.seconds > killed + WORKER_LOSS_BOUND]
    assert late == [], f"failures among requests sent {WORKER_LOSS_BOUND}+ s after the kill"
    assert any(not o.failed for o in traffic.outcomes if o.at > killed + WORKER_LOSS_BOUND)
    # Jobs that ran on the dead node: their leases expire, another replica finishes them.
    traffic.verify_data(jobs_done_within=120, undecided_may_apply=True)

    hosts.wait_until_ready(plain)
    answered = time.monotonic() - restarted
    rejoined = wait_for("the node rejoins", lambda: swarm.node_state(plain) == "ready", 120)
    print(
        f"  restarted: engine up {answered:.0f} s after its start, Ready in the swarm "
        f"{rejoined:.0f} s later"
    )


def test_losing_the_db_node(release: Release, swarm: Swarm, hosts: DockerHosts) -> None:
    db = hosts.hosts[DB]
    before = int(release.stack.psql("SELECT count(*) FROM items"))
    with MixedTraffic(release.stack, resends=1) as traffic:
        time.sleep(3)
        killed = time.monotonic()
        db.kill()
        time.sleep(DB_OUTAGE_SECONDS)
        restarted = time.monotonic()
        db.start()
        hosts.wait_until_ready(db)
        back = wait_for(
            "a write succeeds again",
            lambda: any(o.at > restarted and o.status == 201 for o in traffic.outcomes),
            timeout=180,
        )
        time.sleep(10)
    print(f"lost the db node for {restarted - killed:.0f} s: {traffic.summary()}")
    during = [o for o in traffic.outcomes if killed < o.at < restarted + back]
    unavailable = [o for o in during if o.status == 503 and o.retry_after]
    other = [o for o in during if o.failed and o not in unavailable]
    causes = Counter(f"{o.status} {o.detail[:60]}" for o in other)
    print(
        f"  while down and until a write succeeded: {len(during)} answers, "
        f"{len(unavailable)} 503 with Retry-After, {len(other)} other failures: {dict(causes)}"
    )
    print(f"  a write succeeded {back:.0f} s after the node was started")
    writes_ok = [o for o in traffic.writes if o.at > restarted and not o.failed]
    last_failed = max((o.at for o in traffic.writes if o.failed), default=killed)
    print(f"  last failed write {last_failed - restarted:+.0f} s from the start")
    print(f"  {len(writes_ok)} writes succeeded after the start")
    report(traffic.resent, killed, "no answer, resent")
    # Nothing committed is lost: the volume is on the node's own storage.
    after = int(release.stack.psql("SELECT count(*) FROM items"))
    assert after >= before
    traffic.verify_data(jobs_done_within=120, undecided_may_apply=True)


def test_caddy_keeps_its_data_across_an_edge_update(release: Release, hosts: DockerHosts) -> None:
    proxy = release.stack.container("proxy")
    code, root = proxy.exec_run(["cat", CA_IN_PROXY])
    assert code == 0
    result = deploy_timing_arrivals(release, hosts, release.commits["D"])
    assert result.returncode == 0
    release.stack.wait_until_serving(timeout=120)
    replaced = release.stack.container("proxy")
    assert replaced.id != proxy.id, "the new Caddyfile recreated the proxy"
    code, root_after = replaced.exec_run(["cat", CA_IN_PROXY])
    assert code == 0
    assert root_after == root, "the local CA is the one in the volume"
    name, value = EDGE_D_HEADER.strip().split("\n")[-1].strip().split(" ", 1)
    with release.stack.client() as client:
        assert client.get("/healthz").headers.get(name) == value, "D's Caddyfile serves"
