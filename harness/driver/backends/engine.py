"""What the docker and swarm backends share: a Docker engine, and the node containers in it.

- `engine()`: a client of a running engine, or `BackendUnavailable` saying why there is none.
- Labels: everything a testnet makes in an engine (networks, containers, services) carries its
  run, testnet, state root and backend (`testnet_labels`); teardown and the sweep go by them
  (`remove_labelled`, `sweep_labelled`). No testcontainers Ryuk: these labels
  are the reaper (`HarnessContainer`).
- Networks: a /24 picked at random from a pool, checked against the engine's networks and the
  host's interfaces; an engine refuses overlapping pools, so concurrent runs never share one
  (`create_network`).
- A node's container: whether the node is up (`ready_service`, `probe_ready`), its published
  ports (`published_port`), its programs' pids and signals, read and sent inside the container
  (`program_pid`, `signal_program`), and how long a stop may take (`stop_timeout`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import random
from collections.abc import Callable, Mapping
from typing import Any, Self

import docker
import docker.errors
import docker.types
import httpx
import psutil
import requests
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer

from harness.driver.backends.base import BackendOptions
from harness.driver.errors import BackendUnavailable, HarnessError
from harness.driver.run import docker_engine_configured
from harness.driver.services import Service, service_named, unready
from harness.driver.state import state_root
from harness.driver.waits import GiveUp, wait_until
from harness.node.layout import CONTAINER_DATA_DIR, DataDir, parse_pid_record

log = logging.getLogger(__name__)

RUN_LABEL = "org.harness.run-id"
TESTNET_LABEL = "org.harness.testnet-id"
NODE_LABEL = "org.harness.node-id"
STATE_ROOT_LABEL = "org.harness.state-root"
BACKEND_LABEL = "org.harness.backend"
PUBLISH_HOST = "127.0.0.1"
BINARY_DIRECTORY = "/opt/harness/bin"  # the node programs in the node image
NODE_DATA = DataDir(CONTAINER_DATA_DIR)  # a node's data directory, inside its container


def engine() -> docker.DockerClient:
    """A client of a running Docker engine, or `BackendUnavailable` saying why there is none."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise BackendUnavailable(
            f"the docker backend needs a running Docker engine: cannot reach {where} "
            f"({short(exc)}); use --backend local"
        ) from None
    return client


def short(exc: BaseException) -> str:
    """An error's text, cut to a length that fits a message."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


# Labels.
def testnet_labels(run_id: str, testnet_id: str, backend: str) -> dict[str, str]:
    """The labels of everything a testnet makes in an engine: what the sweep goes by."""
    return {
        RUN_LABEL: run_id,
        TESTNET_LABEL: testnet_id,
        STATE_ROOT_LABEL: str(state_root()),
        BACKEND_LABEL: backend,
    }


def is_ours(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def remove_labelled(
    client: docker.DockerClient, doomed: Callable[[Mapping[str, str]], bool]
) -> int:
    """Remove every swarm service (where the engine manages a swarm), then every container,
    then every network with a run label that `doomed` accepts; return how many."""
    removed = 0
    with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: no services
        for service in client.services.list(filters={"label": RUN_LABEL}):
            if doomed(service.attrs.get("Spec", {}).get("Labels") or {}):
                with contextlib.suppress(docker.errors.NotFound):
                    service.remove()  # type: ignore[no-untyped-call]
                    removed += 1
    for container in client.containers.list(
        all=True, filters={"label": RUN_LABEL}, ignore_removed=True
    ):
        if doomed(container.labels):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)  # an APIError: its service removes it already
                removed += 1
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        if doomed(network.attrs.get("Labels") or {}):
            _remove_network(network)
            removed += 1
    return removed


def _remove_network(network: Any, timeout: float = 20.0) -> None:
    """Remove a network; an overlay keeps "active endpoints" for a moment after the containers
    of removed services are gone, and stays "in use by task" while the swarm has not yet
    deleted the tasks of removed services (a task never placed, say), so those are waited out."""

    def removed() -> bool:
        try:
            network.remove()
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            if "not found" in str(exc):  # a swarm network removed meanwhile, still listed
                return True
            if "active endpoints" in str(exc) or "in use by task" in str(exc):
                raise HarnessError(str(exc)) from None  # not yet
            raise GiveUp(str(exc)) from None
        return True

    try:
        wait_until(removed, f"docker network {network.name} removed", timeout, interval=0.2)
    except HarnessError as exc:
        log.warning("cannot remove docker network %s: %s", network.name, exc)


def sweep_labelled(
    backend: str, doomed_run: Callable[[str], bool], testnet_id: str | None = None
) -> dict[str, int]:
    """Remove what `backend` made for runs of this state root for which `doomed_run(run_id)`
    (only for testnet `testnet_id` of them, if given); return how many per run id. Nothing
    where no Docker engine runs."""
    if not docker_engine_configured():
        return {}
    try:
        client = engine()
    except BackendUnavailable:
        return {}
    removed: dict[str, int] = {}
    root = str(state_root())

    def doomed(labels: Mapping[str, str]) -> bool:
        if labels.get(STATE_ROOT_LABEL) != root:
            return False  # another state root's run (a test's own, say) is not ours to judge
        if labels.get(BACKEND_LABEL, backend) != backend:
            return False  # the other engine backend's: it sweeps its own
        if testnet_id is not None and labels.get(TESTNET_LABEL) != testnet_id:
            return False
        run_id = labels.get(RUN_LABEL, "")
        hit = doomed_run(run_id)
        if hit:
            removed[run_id] = removed.get(run_id, 0) + 1
        return hit

    try:
        remove_labelled(client, doomed)
    finally:
        client.close()
    for run_id, count in removed.items():
        log.warning("swept %d docker object(s) left by run %s (%s)", count, run_id, backend)
    return removed


# Networks.
def taken_subnets(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """Every IPv4 subnet of the engine's networks and of the host's interfaces."""
    taken: list[ipaddress.IPv4Network] = []
    for network in client.api.networks():
        for config in (network.get("IPAM") or {}).get("Config") or ():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                subnet = ipaddress.ip_network(config["Subnet"], strict=False)
                if isinstance(subnet, ipaddress.IPv4Network):
                    taken.append(subnet)
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and address.netmask:
                interface = ipaddress.ip_interface(f"{address.address}/{address.netmask}")
                if isinstance(interface, ipaddress.IPv4Interface):
                    taken.append(interface.network)
    return taken


def create_network(
    client: docker.DockerClient,
    name: str,
    pool: ipaddress.IPv4Network,
    labels: Mapping[str, str],
    driver: str,
    tries: int = 100,
) -> ipaddress.IPv4Network:
    """Create the network `name` on a free /24 of `pool` (attachable, for an overlay); return
    its subnet. A /24 taken meanwhile by another run is skipped."""
    taken = taken_subnets(client)
    rng = random.Random()
    for _ in range(tries):
        block = pool.network_address + 256 * rng.randrange(pool.num_addresses // 256)
        subnet = ipaddress.IPv4Network(f"{block}/24")
        if any(subnet.overlaps(other) for other in taken):
            continue
        try:
            client.networks.create(
                name,
                driver=driver,
                attachable=driver == "overlay",
                labels=dict(labels),
                ipam=docker.types.IPAMConfig(
                    pool_configs=[
                        docker.types.IPAMPool(
                            subnet=str(subnet), gateway=str(subnet.network_address + 1)
                        )
                    ]
                ),
            )
        except docker.errors.APIError as exc:
            if "overlap" in str(exc).lower():  # taken meanwhile by another run
                taken.append(subnet)
                continue
            raise HarnessError(f"cannot create docker network {name}: {exc}") from None
        return subnet
    raise BackendUnavailable(f"no free /24 in {pool} for docker network {name} after {tries} tries")


# A node's container.
class HarnessContainer(DockerContainer):
    """A testcontainers container that starts without Ryuk, whatever testcontainers is
    configured to do for the user's own containers in the same process: Ryuk's image would
    have to be pulled, and the harness removes its containers itself, by label. Networks are
    passed in the docker kwargs (`with_kwargs(network=..., networking_config=...)`)."""

    @classmethod
    def running(cls, container: Container) -> HarnessContainer:
        """A container that an instance of this class started, in another process perhaps
        (a testnet attached to: `Backend.attach`)."""
        adopted = cls(str(container.attrs["Config"]["Image"]))
        adopted._container = container
        return adopted

    def start(self) -> Self:
        self._configure()
        self._container = self.get_docker_client().run(
            self.image,
            command=self._command,
            detach=True,
            environment=self.env,
            ports=self.ports,
            name=self._name,
            volumes={
                host: {"bind": m["bind"], "mode": m["mode"]} for host, m in self.volumes.items()
            },
            **self._kwargs,
        )
        if self._wait_strategy is not None:
            self._wait_strategy.wait_until_ready(self)
        return self


def published_port(container: Container, port: int) -> int:
    """The host port `port` of the container is published on; `ConnectionError` while Docker
    has not filled the mapping in yet (it can lag behind the container's start)."""
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(f"{port}/tcp") or ():
        if binding.get("HostIp") == PUBLISH_HOST and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise ConnectionError(f"port {port} of container {container.short_id} is not published yet")


def ready_service(replica: bool) -> Service:
    """What tells whether a node's container is up: its replica's API for a node assigned to a
    subnet, else its orchestrator's dashboard (`harness.driver.services`)."""
    return service_named("api" if replica else "dashboard")


def probe_ready(http: httpx.Client, host: str, port: int, service: Service) -> tuple[bool, str]:
    """Ask once whether `service` of a node, reached at `host:port`, is ready; return (ready,
    what was observed)."""
    path = service.ready_path
    assert path is not None  # a service with a readiness check
    try:
        response = http.get(f"http://{host}:{port}{path}")
    except httpx.TransportError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    wrong = unready(service, response.status_code, response.content)
    return wrong is None, f"{service.program.name} {service.name}: {wrong or 'ready'}"


def exec_in(container: Container, command: list[str]) -> tuple[int, bytes]:
    """Run `command` in the container; its exit code and output."""
    result = container.exec_run(command)
    output = result.output if isinstance(result.output, bytes) else b""
    return int(result.exit_code or 0), output


def program_pid(container: Container, program: str) -> int | None:
    """The pid (inside the container) of one of the node's programs, or of its orchestrator,
    from its pid file in the container; None when it has none."""
    code, output = exec_in(container, ["cat", str(NODE_DATA.pid_file(program))])
    if code != 0:
        return None
    record = parse_pid_record(output.decode(errors="replace"))
    return None if record is None else record.pid


def signal_program(container: Container, node_id: str, program: str, sig: int) -> int:
    """Send `sig` to one of the node's programs inside its container; return its pid."""
    pid = program_pid(container, program)
    if pid is None:
        raise HarnessError(f"node {node_id}: no {program} process is running")
    code, output = exec_in(container, ["sh", "-c", f"kill -{int(sig)} {pid}"])  # a builtin
    if code != 0:
        raise HarnessError(
            f"node {node_id}: no {program} process is running "
            f"(kill {pid}: {output.decode(errors='replace').strip()})"
        )
    return pid


def stop_timeout(options: BackendOptions) -> int:
    """Seconds a node's container may take to stop before the engine kills it: after the
    orchestrator's own SIGTERM-then-SIGKILL of its programs, with room to spare."""
    return math.ceil(2 * options.stop_grace_period + 5)
