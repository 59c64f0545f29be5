"""The docker backend: every node is a container of the node image (`harness.driver.images`),
run through testcontainers on one docker network per testnet.

How a node maps onto Docker:

- Addresses: each testnet gets a bridge network with a fixed /24 from 172.28.0.0/14, picked at
  random and checked against existing docker networks and host interfaces; Docker refuses
  overlapping pools, so concurrent runs never share one. The network is made in `allocate()`,
  which can therefore return static IPs (.2, .3, ... in plan order) before any container
  exists; each container joins with its IP and its node id as alias.
- Registry: the testnet's registry directory is bind-mounted read-only at /registry in every
  node. A new registry version is a new file in that directory, so every node sees it at once,
  and nothing inside a node can change the registry.
- Node state: `<testnet>/nodes/<id>` is bind-mounted at /var/lib/node (`--data-dir`), so the
  programs' logs (`logs/<NAME>.log`) and pid files (`run/<NAME>.pid`) are readable from the host.
  The orchestrator's own output is the container's `docker logs`; it is appended to
  `orchestrator.log` there whenever a container is removed, and `collect_logs` adds the live
  part.
- Containers run as the host user, so everything in the run directory stays removable by the
  run; binding port 80 still works (`net.ipv4.ip_unprivileged_port_start=0`).
- Ports 80, 443, 7070, 8080, 9090, 9091, 9324, 9325 are published on 127.0.0.1 only, on random
  host ports; `endpoint()` returns the mapping read when the container started.
- Every container and network carries `org.harness.run-id` and `org.harness.testnet-id`;
  `teardown()` removes the testnet's, `sweep_docker()` those of dead runs. These labels are the
  reaper: testcontainers' Ryuk needs an image pull, so the harness's containers
  (`HarnessContainer`) never start it, while the process's other testcontainers keep whatever
  the user configured (nothing here changes testcontainers' settings or the environment).
- Faults: `kill_process` runs `kill -<sig> <pid>` inside the container (pids are the
  container's); `stop_node` is `docker stop`; `pause_node`/`resume_node` freeze the container;
  `partition_node`/`heal_node` take it off its network and back (same IP and alias).
- Restart policy `unless-stopped`: an orchestrator that dies (killed -9, say) takes its
  container down, and Docker starts it again, as systemd's `Restart=always` would; the new
  orchestrator finds the old one's pid files in the data dir and cleans up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import docker
import docker.errors
import docker.types
import httpx
import psutil
import requests
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.exceptions import ContainerStartException
from testcontainers.core.network import Network
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from harness.driver.backends.base import Backend, BackendOptions
from harness.driver.backends.local_addresses import NODE_PORTS
from harness.driver.errors import (
    BackendUnavailable,
    HarnessError,
    NodeStartError,
)
from harness.driver.images import build_node_image, engine
from harness.driver.run import Run, docker_engine_configured, state_root
from harness.driver.topology import Plan, PlannedNode
from harness.driver.waits import wait_until
from harness.node.status import STATUS_PATH, StatusDecodeError, decode_status

log = logging.getLogger(__name__)

RUN_LABEL = "org.harness.run-id"
TESTNET_LABEL = "org.harness.testnet-id"
NODE_LABEL = "org.harness.node-id"
STATE_ROOT_LABEL = "org.harness.state-root"
PUBLISH_HOST = "127.0.0.1"
SUBNET_POOL = ipaddress.ip_network("172.28.0.0/14")
REGISTRY_MOUNT = "/registry"
DATA_MOUNT = "/var/lib/node"
BINARY_DIRECTORY = "/opt/harness/bin"
REPLICA_PORT = 8080
DASHBOARD_PORT = 7070
STARTUP_TIMEOUT = 60.0
PORT_MAPPING_TIMEOUT = 10.0


class HarnessContainer(DockerContainer):
    """A testcontainers container that starts without Ryuk, whatever testcontainers is
    configured to do for the user's own containers in the same process: Ryuk's image would
    have to be pulled, and the harness removes its containers itself, by label. Networks are
    passed in the docker kwargs (`with_kwargs(network=..., networking_config=...)`)."""

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


class ContainerExited(NodeStartError):
    """The node's container stopped while it was being waited for."""


def published_port(container: Container, port: int) -> int:
    """The host port `port` of the container is published on; `ConnectionError` while Docker
    has not filled the mapping in yet (it can lag behind the container's start)."""
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(f"{port}/tcp") or ():
        if binding.get("HostIp") == PUBLISH_HOST and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise ConnectionError(f"port {port} of container {container.short_id} is not published yet")


def testnet_labels(run_id: str, testnet_id: str) -> dict[str, str]:
    """The labels of everything a testnet makes in a docker engine: what the sweep goes by."""
    return {RUN_LABEL: run_id, TESTNET_LABEL: testnet_id, STATE_ROOT_LABEL: str(state_root())}


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


class NodeReadyWaitStrategy(WaitStrategy):
    """Ready when the replica's CBOR status on 8080 says healthy (a node assigned to a subnet),
    or when the orchestrator's dashboard on 7070 answers (unassigned and API boundary nodes).
    testcontainers' `HttpWaitStrategy` cannot do the first: it decodes bodies as text.

    A container that exits (or restarts) ends the wait at once; a port mapping Docker has not
    filled in yet is waited out. The loop is its own: testcontainers' polling helper is not
    there in every version the harness supports."""

    POLL_INTERVAL = 0.1

    def __init__(self, node_id: str, replica: bool, timeout: float) -> None:
        super().__init__()
        self.node_id = node_id
        self.replica = replica
        self.timeout = timeout
        self.port = ready_path(replica)[0]
        self.last = "nothing observed yet"

    @property
    def what(self) -> str:
        if self.replica:
            return f"a healthy replica status on port {REPLICA_PORT}"
        return f"the orchestrator dashboard on port {DASHBOARD_PORT}"

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        deadline = time.monotonic() + self.timeout
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while True:
                try:
                    if self._check(container, http):
                        return
                except ConnectionError as exc:  # the port mapping lags behind the start
                    self.last = str(exc)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"node {self.node_id}: no {self.what} within {self.timeout:.0f} s; "
                        f"last: {self.last}"
                    )
                time.sleep(self.POLL_INTERVAL)

    def _check(self, container: WaitStrategyTarget, http: httpx.Client) -> bool:
        container.reload()
        wrapped = container.get_wrapped_container()
        # With the restart policy, a container whose orchestrator cannot start is "restarting"
        # (or already restarted) rather than "exited": a start that failed all the same.
        if container.status in ("exited", "dead", "restarting") or wrapped.attrs.get(
            "RestartCount", 0
        ):
            raise ContainerExited(f"node {self.node_id}: its container exited")
        host_port = published_port(wrapped, self.port)
        ready, self.last = probe_ready(http, PUBLISH_HOST, host_port, self.replica)
        return ready


def ready_path(replica: bool) -> tuple[int, str]:
    """The port and path that tell whether a node is up: its replica's status on 8080 for a
    node assigned to a subnet, else its orchestrator's dashboard on 7070."""
    return (REPLICA_PORT, STATUS_PATH) if replica else (DASHBOARD_PORT, "/")


def probe_ready(http: httpx.Client, host: str, port: int, replica: bool) -> tuple[bool, str]:
    """Ask once whether a node is up (see `ready_path`), reached at `host:port`; return
    (up, what was observed)."""
    try:
        response = http.get(f"http://{host}:{port}{ready_path(replica)[1]}")
    except httpx.TransportError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if not replica:
        return response.status_code == 200, f"the dashboard answered {response.status_code}"
    try:
        status = decode_status(response.content)
    except StatusDecodeError as exc:
        return False, f"{response.status_code}: {exc}"
    return status.is_healthy, f"replica_health_status {status.replica_health_status}"


@dataclass
class _DockerNode:
    node_id: str
    ip: str
    data_dir: Path
    container: HarnessContainer | None = None
    ports: dict[int, int] = field(default_factory=dict)
    started_at: str | None = None  # when the container started that `ports` were read from
    partitioned: bool = False


class DockerBackend(Backend):
    """Nodes as containers on a per-testnet docker network."""

    name = "docker"

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        super().__init__(run, testnet_id, directory, options)
        self._client = engine()
        self._nodes: dict[str, _DockerNode] = {}
        self._image: str | None = None
        self.network_name = f"harness-{run.run_id}-{testnet_id}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.startup_timeout = STARTUP_TIMEOUT

    @property
    def labels(self) -> dict[str, str]:
        return testnet_labels(self.run.run_id, self.testnet_id)

    # Addresses.
    def allocate(self, plan: Plan) -> Mapping[str, str]:
        if len(plan.nodes) > 250:
            raise HarnessError(f"the docker backend runs at most 250 nodes, not {len(plan.nodes)}")
        self._image = build_node_image(client=self._client)
        self.subnet = self._create_network()
        ips: dict[str, str] = {}
        for node in plan.nodes:
            ip = str(self.subnet.network_address + node.index + 2)
            ips[node.node_id] = ip
            self._nodes[node.node_id] = _DockerNode(node.node_id, ip, self.directory / node.node_id)
        return ips

    def _create_network(self, tries: int = 100) -> ipaddress.IPv4Network:
        taken = taken_subnets(self._client)
        blocks = SUBNET_POOL.num_addresses // 256
        rng = random.Random()
        for _ in range(tries):
            block = SUBNET_POOL.network_address + 256 * rng.randrange(blocks)
            subnet = ipaddress.IPv4Network(f"{block}/24")
            if any(subnet.overlaps(other) for other in taken):
                continue
            network = Network(
                docker_network_kw={
                    "driver": "bridge",
                    "labels": self.labels,
                    "ipam": docker.types.IPAMConfig(
                        pool_configs=[
                            docker.types.IPAMPool(
                                subnet=str(subnet), gateway=str(subnet.network_address + 1)
                            )
                        ]
                    ),
                }
            )
            network.name = self.network_name
            try:
                network.create()
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():  # taken meanwhile by another run
                    taken.append(subnet)
                    continue
                raise HarnessError(
                    f"cannot create docker network {self.network_name}: {exc}"
                ) from None
            return subnet
        raise BackendUnavailable(
            f"no free /24 in {SUBNET_POOL} for the testnet's docker network after {tries} tries"
        )

    def _node(self, node_id: str) -> _DockerNode:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise HarnessError(f"no node {node_id!r} in testnet {self.testnet_id}") from None

    # Life cycle.
    def start_node(self, node: PlannedNode, registry_path: Path) -> None:
        local = self._node(node.node_id)
        if self._image is None:
            raise HarnessError("allocate() must run before start_node()")
        if self._created(local) is not None and self._wrapped(local).status in (
            "running",
            "paused",
            "restarting",
        ):
            raise HarnessError(f"node {node.node_id} is already running")
        self._remove(local)  # a stopped node restarts as a new container, same IP and data
        local.data_dir.mkdir(parents=True, exist_ok=True)
        container = self._container(local, node, registry_path)
        local.container = container
        try:
            container.start()
        except Exception as exc:
            raise self._start_error(local, exc) from exc
        local.ports = self._read_ports(local)

    def _container(
        self, local: _DockerNode, node: PlannedNode, registry_path: Path
    ) -> HarnessContainer:
        assert self._image is not None
        command = self.orchestrator_arguments(
            node.node_id,
            REGISTRY_MOUNT,
            DATA_MOUNT,
            "0.0.0.0",
            "--ic-binary-directory",
            BINARY_DIRECTORY,
        )
        endpoint = docker.types.EndpointConfig(
            self._client.api.api_version, aliases=[node.node_id], ipv4_address=local.ip
        )
        container = (
            HarnessContainer(self._image)
            .with_name(f"{self.network_name}-{node.node_id}")
            .with_command(command)
            .with_volume_mapping(registry_path.resolve(), REGISTRY_MOUNT, "ro")
            .with_volume_mapping(local.data_dir.resolve(), DATA_MOUNT, "rw")
            .with_kwargs(
                labels={**self.labels, NODE_LABEL: node.node_id},
                restart_policy={"Name": "unless-stopped"},
                hostname=node.node_id[:63],
                user=f"{os.getuid()}:{os.getgid()}",
                network=self.network_name,
                networking_config={self.network_name: endpoint},
                sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            )
            .waiting_for(
                NodeReadyWaitStrategy(
                    node.node_id, node.subnet_id is not None, self.startup_timeout
                )
            )
        )
        ports: dict[str, Any] = container.ports
        for port in NODE_PORTS:
            ports[f"{port}/tcp"] = (PUBLISH_HOST, None)  # random host port, loopback only
        return container

    def _start_error(self, local: _DockerNode, exc: BaseException) -> NodeStartError:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, NodeStartError | TimeoutError):
            cause = cause.__cause__
        reason = str(cause or exc).split("\n", 1)[0]
        tail = self._docker_logs(local)[-3000:].decode(errors="replace")
        return NodeStartError(
            f"node {local.node_id} did not come up: {reason}\n"
            f"--- orchestrator output (docker logs) ---\n{tail}"
        )

    def _read_ports(self, local: _DockerNode) -> dict[int, int]:
        """Every published port of the node's container, waiting out the mapping race."""
        container = self._wrapped(local)

        def read() -> dict[int, int]:
            container.reload()
            return {port: published_port(container, port) for port in NODE_PORTS}

        return wait_until(
            read, f"the port mappings of node {local.node_id}", PORT_MAPPING_TIMEOUT, 0.1
        )

    @staticmethod
    def _created(local: _DockerNode) -> Container | None:
        """The node's docker container, or None when none was created (yet)."""
        if local.container is None:
            return None
        try:
            return local.container.get_wrapped_container()
        except ContainerStartException:
            return None

    def _wrapped(self, local: _DockerNode) -> Container:
        """The node's container with its state fresh from the engine."""
        wrapped = self._created(local)
        if wrapped is None:
            raise HarnessError(f"node {local.node_id} has not been started")
        with contextlib.suppress(docker.errors.NotFound):
            wrapped.reload()
        return wrapped

    def _running(self, local: _DockerNode) -> Container:
        container = self._wrapped(local)
        if container.status != "running":
            raise HarnessError(
                f"node {local.node_id} is not running (its container is {container.status})"
            )
        return container

    def stop_node(self, node_id: str) -> None:
        local = self._node(node_id)
        container = self._wrapped(local)
        if container.status == "paused":
            container.unpause()
        if container.status in ("running", "paused", "restarting"):
            # Docker sends SIGTERM (tini forwards it to the orchestrator), SIGKILL after this.
            container.stop(timeout=self._stop_timeout())

    def _stop_timeout(self) -> int:
        return math.ceil(2 * self.options.stop_grace_period + 5)

    def pause_node(self, node_id: str) -> None:
        """Freeze every process of the node (`docker pause`): it stops answering, keeps state."""
        self._running(self._node(node_id)).pause()

    def resume_node(self, node_id: str) -> None:
        container = self._wrapped(self._node(node_id))
        if container.status == "paused":
            container.unpause()

    def partition_node(self, node_id: str) -> None:
        """Take the node off the testnet's network: no other node (nor the host) reaches it."""
        local = self._node(node_id)
        self._client.networks.get(self.network_name).disconnect(self._wrapped(local))
        local.partitioned = True

    def heal_node(self, node_id: str) -> None:
        """Put a partitioned node back on the network with its IP and alias."""
        local = self._node(node_id)
        if not local.partitioned:
            return
        self._client.networks.get(self.network_name).connect(
            self._wrapped(local), aliases=[node_id], ipv4_address=local.ip
        )
        local.partitioned = False
        local.ports = self._read_ports(local)

    # Faults and inspection.
    def process_pid(self, node_id: str, process: str) -> int | None:
        """The pid (inside the container) of one of the node's programs, from its pid file."""
        local = self._node(node_id)
        try:
            if process == "orchestrator":
                return int((local.data_dir / "orchestrator.pid").read_text().strip())
            record = json.loads((local.data_dir / "run" / f"{process}.pid").read_text())
            return int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def kill_process(self, node_id: str, process: str, sig: int = signal.SIGKILL) -> int:
        local = self._node(node_id)
        container = self._running(local)
        pid = self.process_pid(node_id, process)
        if pid is None:
            raise HarnessError(f"node {node_id}: no {process} process is running")
        result = container.exec_run(["sh", "-c", f"kill -{int(sig)} {pid}"])
        if result.exit_code != 0:
            output = result.output if isinstance(result.output, bytes) else b""
            message = output.decode(errors="replace").strip()
            raise HarnessError(
                f"node {node_id}: no {process} process is running (kill {pid}: {message})"
            )
        return pid

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        local = self._node(node_id)
        if port not in NODE_PORTS:
            raise HarnessError(f"port {port} of a node is not published; published: {NODE_PORTS}")
        if not local.ports:
            raise HarnessError(f"node {node_id} has not been started")
        self._refresh_ports(local)
        return PUBLISH_HOST, local.ports[port]

    def _refresh_ports(self, local: _DockerNode) -> None:
        """Docker gives a restarted container (restart policy) new random host ports: read
        them again when the container is running and has started since they were read."""
        container = self._created(local)
        if container is None:
            return
        try:
            state = self._client.api.inspect_container(str(container.id))["State"]
        except docker.errors.NotFound:
            return
        if state.get("Running") and state.get("StartedAt") != local.started_at:
            local.ports = self._read_ports(local)
            local.started_at = state.get("StartedAt")

    # Logs.
    def _docker_logs(self, local: _DockerNode) -> bytes:
        container = self._created(local)
        if container is None:
            return b""
        try:
            return bytes(container.logs(stdout=True, stderr=True))
        except (docker.errors.DockerException, requests.RequestException):
            return b""

    def read_log(self, node_id: str, process: str, follow: bool = False) -> Iterator[bytes]:
        if process != "orchestrator":
            return super().read_log(node_id, process, follow)
        # The orchestrator's output: what removed containers of the node wrote (kept in
        # orchestrator.log), then the current container's `docker logs`.
        saved = self.data_dir(node_id) / "orchestrator.log"
        container = self._node_container(node_id)
        if container is None and not saved.is_file():
            raise self.no_log(node_id, process)
        return self._orchestrator_output(saved, container, follow)

    @staticmethod
    def _orchestrator_output(
        saved: Path, container: Container | None, follow: bool
    ) -> Iterator[bytes]:
        if saved.is_file():
            yield saved.read_bytes()
        if container is None:
            return
        try:
            if follow:
                yield from container.logs(stream=True, follow=True)
            else:
                yield bytes(container.logs(stdout=True, stderr=True))
        except (docker.errors.DockerException, requests.RequestException):
            return

    def _node_container(self, node_id: str) -> Container | None:
        """The node's container: the one this backend started or, attached to a testnet another
        process started (`harness logs`), the one with the node's name."""
        local = self._nodes.get(node_id)
        if local is not None:
            return self._created(local)
        try:
            return self._client.containers.get(f"{self.network_name}-{node_id}")
        except docker.errors.NotFound:
            return None

    def _remove(self, local: _DockerNode) -> None:
        """Remove the node's container, keeping its output in orchestrator.log."""
        output = self._docker_logs(local)
        if output and local.data_dir.is_dir():
            with (local.data_dir / "orchestrator.log").open("ab") as saved:
                saved.write(output)
        container = self._created(local)
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        local.container = None

    def teardown(self) -> None:
        started = [local for local in self._nodes.values() if self._created(local) is not None]
        for local in started:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                container = self._wrapped(local)
                if container.status == "paused":
                    container.unpause()
                if container.status == "running":
                    container.kill(signal="SIGTERM")
        for local in started:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                container = self._wrapped(local)
                try:
                    container.wait(timeout=self._stop_timeout())
                except requests.RequestException:
                    log.warning("node %s ignored SIGTERM; killing it", local.node_id)
            self._remove(local)
        if self.subnet is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.networks.get(self.network_name).remove()
            self.subnet = None
        # Anything else with this testnet's labels (say, from a start interrupted between
        # creating a container and recording it) goes too.
        removed = remove_labelled(self._client, lambda labels: is_ours(labels, self.labels))
        if removed:
            log.warning("testnet %s: removed %d untracked leftover(s)", self.testnet_id, removed)
        for local in self._nodes.values():
            local.ports = {}


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
    of removed services are gone, so that is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            network.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                log.warning("cannot remove docker network %s: %s", network.name, exc)
                return
            time.sleep(0.2)


def remove_testnet_containers(run_id: str, testnet_id: str) -> int:
    """Remove the services, containers and networks of one testnet; return how many."""
    try:
        client = engine()
    except BackendUnavailable:
        return 0
    wanted = testnet_labels(run_id, testnet_id)
    try:
        return remove_labelled(client, lambda labels: is_ours(labels, wanted))
    finally:
        client.close()


def sweep_docker(
    everything: bool = False,
    only_run: str | None = None,
    live_run: Callable[[str], bool] = lambda run_id: True,
) -> dict[str, int]:
    """Remove containers and networks of dead runs (those for which `live_run(run_id)` is
    False; by default every run counts as alive), of every run (`everything`) or of one run
    (`only_run`). Returns how many were removed per run id; does nothing where no Docker engine
    runs."""
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
        run_id = labels.get(RUN_LABEL, "")
        hit = run_id == only_run if only_run is not None else everything or not live_run(run_id)
        if hit:
            removed[run_id] = removed.get(run_id, 0) + 1
        return hit

    try:
        remove_labelled(client, doomed)
    finally:
        client.close()
    for run_id, count in removed.items():
        log.warning("swept %d docker container(s)/network(s) left by run %s", count, run_id)
    return removed
