"""Test hosts that are real Docker hosts (issue 15): containers of the test-host image
(testhost/Dockerfile), each with its own Docker engine and sshd, in its own network namespace
on a test network of their own (NETWORK by default; a module that runs beside another names
its own network, subnet, names and ports). The code under test reaches a host as a user
reaches a server, `ssh://deploy@<address>` with a checked host key; the harness inspects its
engine through a socket in a host directory. Their HTTP and HTTPS ports are published on
loopback only."""

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import docker
from docker.models.containers import Container

from stack_facts import eventually

RECIPE = Path(__file__).with_name("testhost")
NETWORK = "service-testhosts"
# A subnet of our own, so that each host keeps its address across a stop and a start (an
# ssh:// URL, a Swarm node's address). Outside the local pools (172.17-31/16, 192.168/20) that
# the engines inside the hosts allocate their networks from; Swarm's overlays count up from
# 10.0.0.0/24.
SUBNET = IPv4Network("10.63.0.0/24")
LABEL = "service.testhost"
# Each host's stack publishes these plus the host's index (the range 63000-63999 is ours).
HTTP_PORT = 63080
HTTPS_PORT = 63443
PREFIX = "service-testhost"
# --privileged asks for every capability, and this machine's bounding set lacks
# CAP_SYS_RESOURCE (runc: "unable to apply caps"): every other one, and what --privileged
# lifts besides (seccomp, AppArmor, the masked /proc paths, without which the kernel refuses
# the engine's containers a /proc of their own, and the device cgroup). The entrypoint makes
# /sys and the cgroups writable; a cgroup namespace of its own gives the engine a root to
# create its containers' cgroups under. The CLI, not docker-py: only the CLI turns
# systempaths=unconfined into the API's empty MaskedPaths and ReadonlyPaths.
ENGINE_PRIVILEGES = (
    "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined", "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined", "--device-cgroup-rule=a *:* rwm",
    "--cgroupns=private",
)  # fmt: skip


def image() -> str:
    """The test-host image's tag, built when this engine lacks it. The tag is the hash of the
    recipe, as for the tools image, so an unchanged recipe is never rebuilt."""
    digest = hashlib.sha256()
    for path in sorted(RECIPE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tag = f"service-testhost:{digest.hexdigest()[:12]}"
    engine = docker.from_env()
    if not engine.images.list(name=tag):
        print(f"building {tag} from {RECIPE}")
        built = subprocess.run(
            ["docker", "build", "--quiet", "--tag", tag, str(RECIPE)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert built.returncode == 0, built.stderr[-3000:]
    return tag


@dataclass
class DockerHost:
    index: int
    address: str
    container: Container  # on this machine's engine
    socket_dir: Path  # where its engine listens for the harness
    http_port: int  # published on this machine's loopback, the same number inside
    https_port: int

    @property
    def url(self) -> str:
        """Its DOCKER_HOST, as the runbook writes it."""
        return f"ssh://deploy@{self.address}"

    def engine(self) -> docker.DockerClient:
        """Its Docker engine, for the harness only: the code under test goes over SSH."""
        return docker.DockerClient(base_url=f"unix://{self.socket_dir}/docker.sock")

    def host_key(self) -> str:
        """Its sshd's public key, read out of band (as an operator reads a new server's)."""
        return self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").strip()

    def exec(self, *command: str) -> str:
        code, output = self.container.exec_run(list(command))
        assert code == 0, output
        return str(output.decode())

    def rekey(self) -> None:
        """A new host key, as a reinstalled server (or a man in the middle) would present."""
        self.exec(
            "sh", "-c",
            "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub"
            " && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key"
            " && kill -HUP \"$(cat /run/sshd.pid)\"",
        )  # fmt: skip

    # --- power ----------------------------------------------------------------------------
    def stop(self) -> None:
        """A clean shutdown: the engine stops its containers first."""
        self.container.stop(timeout=60)

    def kill(self) -> None:
        """Power lost: the engine and everything on it die without warning. Its network goes
        first: a killed container's kernel still sends the FINs and RSTs of its dying
        processes, a machine without power sends nothing, and its peers learn only from
        their own timeouts."""
        cut_off(self.address, True)
        self.container.kill()

    def start(self) -> None:
        cut_off(self.address, False)
        self.container.start()

    def engine_ready(self) -> bool:
        try:
            return bool(self.engine().ping())
        except docker.errors.DockerException:
            return False


def cut_off(address: str, cut: bool) -> None:
    """Drops every packet from or to `address` as it crosses this machine's bridges (Docker's
    DOCKER-USER chain sees them: Docker turns bridge netfilter on), or stops dropping them."""
    for direction in ("--source", "--destination"):
        rule = ["DOCKER-USER", direction, address, "--jump", "DROP"]
        if cut:
            subprocess.run(["iptables", "--wait", "--insert", *rule], check=True)
        else:  # every copy, and none is no error
            delete = ["iptables", "--wait", "--delete", *rule]
            while subprocess.run(delete, capture_output=True, check=False).returncode == 0:
                pass


class DockerHosts:
    """N test hosts, the network they share, and the SSH client configuration for them."""

    def __init__(
        self,
        workdir: Path,
        count: int,
        network: str = NETWORK,
        subnet: IPv4Network = SUBNET,
        prefix: str = PREFIX,
        http_port: int = HTTP_PORT,
        https_port: int = HTTPS_PORT,
    ) -> None:
        self.workdir = workdir
        self.count = count
        self.network = network
        self.subnet = subnet
        self.prefix = prefix
        self.http_port = http_port
        self.https_port = https_port
        self.hosts: list[DockerHost] = []
        self.key = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.ssh_config = workdir / "ssh_config"
        self.bin = workdir / "bin"
        self.engine = docker.from_env()

    @property
    def label(self) -> str:
        """What marks these hosts and their network: a key of their own, which a filter on
        another module's key (or on LABEL alone, as before) never matches."""
        return f"{LABEL}.{self.prefix}"

    @property
    def gateway(self) -> str:
        """This machine's address on the test network: where its clients come from (a port
        published on loopback is forwarded from here)."""
        return str(self.subnet[1])

    def address(self, index: int) -> str:
        """Host `index`'s fixed address on the test network."""
        return str(self.subnet[10 + index])

    # --- lifecycle ------------------------------------------------------------------------
    @contextmanager
    def running(self) -> Iterator["DockerHosts"]:
        try:
            self.start()
            yield self
        finally:
            self.remove()

    def start(self) -> None:
        started = time.monotonic()
        self.remove()  # what an interrupted run left
        tag = image()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy@tests", "-f", self.key],
            check=True,
        )
        self.write_ssh_client()
        pool = docker.types.IPAMPool(subnet=str(self.subnet), gateway=self.gateway)
        ipam = docker.types.IPAMConfig(pool_configs=[pool])
        self.engine.networks.create(self.network, ipam=ipam, labels={self.label: "network"})
        public_key = self.key.with_suffix(".pub").read_text().strip()
        for index in range(self.count):
            self.hosts.append(self.create(tag, index, public_key))
        for host in self.hosts:
            self.wait_until_ready(host)
        print(f"{self.count} test hosts up in {time.monotonic() - started:.1f} s")

    def create(self, tag: str, index: int, public_key: str) -> DockerHost:
        name = f"{self.prefix}-{index}"
        address = self.address(index)
        socket_dir = self.workdir / name
        socket_dir.mkdir()
        http_port, https_port = self.http_port + index, self.https_port + index
        ports = [(http_port, "tcp"), (https_port, "tcp"), (https_port, "udp")]
        published = [f"127.0.0.1:{port}:{port}/{protocol}" for port, protocol in ports]
        created = subprocess.run(
            [
                "docker", "run", "--detach", "--name", name, "--hostname", name,
                "--label", f"{self.label}=host", "--env", f"AUTHORIZED_KEYS={public_key}",
                "--network", self.network, "--ip", address,
                *(f"--publish={port}" for port in published),
                "--volume", f"{name}-docker:/var/lib/docker",
                "--volume", f"{socket_dir}:/run/harness",
                *ENGINE_PRIVILEGES, tag,
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        container = self.engine.containers.get(created.stdout.strip())
        return DockerHost(index, address, container, socket_dir, http_port, https_port)

    def wait_until_ready(self, host: DockerHost, timeout: float = 60) -> None:
        """Its engine answers, and `deploy` logs in over SSH with the key it is known by."""
        assert eventually(host.engine_ready, timeout), f"{host.container.name}: no engine"
        self.trust()
        login = ["ssh", "-F", str(self.ssh_config), f"deploy@{host.address}", "docker", "version"]
        assert eventually(
            lambda: subprocess.run(login, capture_output=True, check=False).returncode == 0,
            timeout,
        ), f"{host.container.name}: no SSH login"

    def remove(self) -> None:
        """The hosts, their engines' volumes (all they ran and stored) and the network: these
        hosts' only (by prefix), never those of a module running beside this one."""
        mine = {"label": self.label}
        for container in self.engine.containers.list(all=True, filters=mine):
            container.remove(force=True, v=True)
        for index in range(self.count):
            cut_off(self.address(index), False)  # what a killed host left
        for volume in (f"{self.prefix}-{index}-docker" for index in range(self.count)):
            if self.engine.volumes.list(filters={"name": volume}):
                self.engine.volumes.get(volume).remove(force=True)
        for network in self.engine.networks.list(names=[self.network]):
            network.remove()
        self.hosts.clear()

    # --- the SSH client -------------------------------------------------------------------
    def trust(self) -> None:
        """known_hosts holds each host's current key, read out of band."""
        self.known_hosts.write_text(
            "".join(f"{host.address} {host.host_key()}\n" for host in self.hosts)
        )

    def write_ssh_client(self) -> None:
        """What a user's ~/.ssh/config would say for these hosts, in a file of the test's own
        (root's ~/.ssh stays untouched), and an `ssh` that reads it: the Docker CLI's ssh://
        transport runs whatever `ssh` is first on PATH (see environ)."""
        self.ssh_config.write_text(
            "Host *\n"
            f"  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
        )
        ssh = shutil.which("ssh")
        assert ssh, "the Docker CLI's ssh:// transport needs an ssh client (openssh-client)"
        self.bin.mkdir()
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {ssh} -F {self.ssh_config} "$@"\n')
        wrapper.chmod(0o755)

    def environ(self) -> dict[str, str]:
        """The environment to run `scripts/deploy` in: ssh finds this suite's configuration."""
        return {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
