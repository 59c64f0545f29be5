"""The docker backend: every node is a container of the node image (`images.py`), run through
testcontainers on one docker network per testnet.

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
- Every node port (`harness.node.catalog.NODE_PORTS`: its programs' endpoints) is published on
  127.0.0.1 only, on a random host port; `endpoint()` returns the mapping read when the
  container started.
- Every container and network carries the testnet's labels (`engine.testnet_labels`);
  `teardown()` removes the testnet's, `sweep()` those of dead runs. These labels are the
  reaper: testcontainers' Ryuk needs an image pull, so the harness's containers
  (`engine.HarnessContainer`) never start it, while the process's other testcontainers keep
  whatever the user configured (nothing here changes testcontainers' settings or the
  environment).
- Faults: `kill_process` runs `kill -<sig> <pid>` inside the container (pids are the
  container's, from the pid files there); `stop_node` is `docker stop`;
  `pause_node`/`resume_node` freeze the container;
  `partition_node`/`heal_node` take it off its network and back (same IP and alias).
- Prometheus (`with_prometheus()`): a container of the Prometheus image on the testnet's
  network at its last address (.254; nodes count up from .2), scraping every node at its fixed
  address and ports (`prometheus_container`), its port 9090 published on 127.0.0.1.
- Restart policy `unless-stopped`: an orchestrator that dies (killed -9, say) takes its
  container down, and Docker starts it again, as systemd's `Restart=always` would; the new
  orchestrator finds the old one's pid files in the data dir and cleans up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import httpx
import requests
from docker.models.containers import Container
from rich.console import Console
from testcontainers.core.exceptions import ContainerStartException
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from harness.driver.backends import engine
from harness.driver.backends.base import Backend, BackendOptions, write_file
from harness.driver.backends.capabilities import (
    NodeFiles,
    Partitionable,
    Pausable,
    PrometheusBeside,
    Signallable,
    Stoppable,
)
from harness.driver.backends.engine import (
    BINARY_DIRECTORY,
    NODE_DATA,
    NODE_LABEL,
    PUBLISH_HOST,
    HarnessContainer,
    probe_ready,
    published_port,
    ready_service,
)
from harness.driver.backends.images import build_node_image
from harness.driver.backends.prometheus_container import ContainerServer
from harness.driver.errors import HarnessError, NodeStartError
from harness.driver.http import plain_client
from harness.driver.run import Run
from harness.driver.topology import Plan, PlannedNode
from harness.driver.waits import GiveUp, wait_until
from harness.node.catalog import NODE_PORTS
from harness.node.layout import DataDir

log = logging.getLogger(__name__)

SUBNET_POOL = ipaddress.IPv4Network("172.28.0.0/14")
REGISTRY_MOUNT = "/registry"
STARTUP_TIMEOUT = 60.0
PORT_MAPPING_TIMEOUT = 10.0


class ContainerExited(NodeStartError, GiveUp):
    """The node's container stopped while it was being waited for: the wait ends at once."""


class NodeReadyWaitStrategy(WaitStrategy):
    """Ready when the replica's CBOR status on 8080 says healthy (a node assigned to a subnet),
    or when the orchestrator's dashboard on 7070 answers (unassigned and API boundary nodes).
    testcontainers' `HttpWaitStrategy` cannot do the first: it decodes bodies as text.

    A container that exits (or restarts) ends the wait at once; a port mapping Docker has not
    filled in yet is waited out. The harness's `wait_until` polls: testcontainers' polling
    helper is not there in every version the harness supports."""

    POLL_INTERVAL = 0.1

    def __init__(self, node_id: str, replica: bool, timeout: float) -> None:
        super().__init__()
        self.node_id = node_id
        self.replica = replica
        self.timeout = timeout
        self.service = ready_service(replica)
        self.last = "nothing observed yet"

    @property
    def what(self) -> str:
        service = self.service
        return f"ready {service.program.name} {service.name} on port {service.port}"

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        with plain_client(2.0) as http:

            def ready() -> bool:
                if not self._check(container, http):
                    raise HarnessError(self.last)
                return True

            # A port mapping not filled in yet is a ConnectionError: an OSError, "not yet".
            wait_until(ready, f"node {self.node_id}: {self.what}", self.timeout, self.POLL_INTERVAL)

    def _check(self, container: WaitStrategyTarget, http: httpx.Client) -> bool:
        container.reload()
        wrapped = container.get_wrapped_container()
        # With the restart policy, a container whose orchestrator cannot start is "restarting"
        # (or already restarted) rather than "exited": a start that failed all the same.
        if container.status in ("exited", "dead", "restarting") or wrapped.attrs.get(
            "RestartCount", 0
        ):
            raise ContainerExited(f"node {self.node_id}: its container exited")
        host_port = published_port(wrapped, self.service.port)
        ready, self.last = probe_ready(http, PUBLISH_HOST, host_port, self.service)
        return ready


@dataclass
class _DockerNode:
    node_id: str
    ip: str
    data_dir: Path
    container: HarnessContainer | None = None
    ports: dict[int, int] = field(default_factory=dict)
    started_at: str | None = None  # when the container started that `ports` were read from
    partitioned: bool = False


class DockerBackend(
    Backend, Pausable, Partitionable, Stoppable, Signallable, NodeFiles, PrometheusBeside
):
    """Nodes as containers on a per-testnet docker network."""

    name = "docker"

    @classmethod
    def prepare(cls, console: Console) -> None:
        build_node_image(console=console)

    @classmethod
    def sweep(
        cls, doomed_run: Callable[[str], bool], testnet_id: str | None = None
    ) -> dict[str, int]:
        return engine.sweep_labelled(cls.name, doomed_run, testnet_id)

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        super().__init__(run, testnet_id, directory, options)
        self._client = engine.engine()
        self._nodes: dict[str, _DockerNode] = {}
        self._image: str | None = None
        self.network_name = f"harness-{run.run_id}-{testnet_id}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.startup_timeout = STARTUP_TIMEOUT

    @property
    def labels(self) -> dict[str, str]:
        return engine.testnet_labels(self.run.run_id, self.testnet_id, self.name)

    # Addresses.
    def allocate(self, plan: Plan, registry_path: Path) -> Mapping[str, str]:
        if len(plan.nodes) > 250:
            raise HarnessError(f"the docker backend runs at most 250 nodes, not {len(plan.nodes)}")
        self._image = build_node_image(client=self._client)
        self.subnet = engine.create_network(
            self._client, self.network_name, SUBNET_POOL, self.labels, driver="bridge"
        )
        ips: dict[str, str] = {}
        for node in plan.nodes:
            ip = str(self.subnet.network_address + node.index + 2)
            ips[node.node_id] = ip
            self._nodes[node.node_id] = _DockerNode(
                node.node_id, ip, self.data_dir(node.node_id).root
            )
        return ips

    def _node(self, node_id: str) -> _DockerNode:
        return self.known(self._nodes, node_id)

    # Attaching (`Testnet.attach`): the containers are found by their names.
    def state(self) -> dict[str, Any]:
        return {"image": self._image, "subnet": str(self.subnet) if self.subnet else None}

    def attach(
        self, plan: Plan, ips: Mapping[str, str], registry_path: Path, state: Mapping[str, Any]
    ) -> None:
        self._image = state.get("image")
        self.subnet = ipaddress.IPv4Network(state["subnet"]) if state.get("subnet") else None
        for node in plan.nodes:
            local = _DockerNode(node.node_id, ips[node.node_id], self.data_dir(node.node_id).root)
            self._nodes[node.node_id] = local
        self.take_back()

    def take_back(self) -> None:
        """The nodes' containers as they are now, found by their names (a node started anew
        by another process has a new container, and new host ports)."""
        for local in self._nodes.values():
            try:
                container = self._client.containers.get(f"{self.network_name}-{local.node_id}")
            except docker.errors.NotFound:
                local.container = None  # starting the node makes a new one
                local.ports = {}
                continue
            local.container = HarnessContainer.running(container)
            networks = container.attrs["NetworkSettings"]["Networks"] or {}
            local.partitioned = self.network_name not in networks
            if container.status == "running" and not local.partitioned:
                local.ports = self._read_ports(local)
                local.started_at = container.attrs["State"]["StartedAt"]

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
            str(NODE_DATA.root),
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
            .with_volume_mapping(local.data_dir.resolve(), str(NODE_DATA.root), "rw")
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
        for path in self.options.binaries.values():  # `with_binary`: at the same path, read-only
            container.with_volume_mapping(path, path, "ro")
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
            container.stop(timeout=engine.stop_timeout(self.options))

    def node_running(self, node_id: str) -> bool:
        container = self._created(self._node(node_id))
        if container is None:
            return False
        with contextlib.suppress(docker.errors.NotFound):
            container.reload()
            return container.status in ("running", "paused", "restarting")
        return False

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
    def kill_process(self, node_id: str, process: str, sig: int = signal.SIGKILL) -> int:
        return engine.signal_program(self._running(self._node(node_id)), node_id, process, sig)

    def write_node_file(self, node_id: str, relative: str, data: bytes | None) -> None:
        write_file(self.data_dir(node_id).root / relative, data)  # the bind-mounted data dir

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        local = self._node(node_id)
        if port not in NODE_PORTS:
            published = [int(p) for p in NODE_PORTS]
            raise HarnessError(f"port {port} of a node is not published; published: {published}")
        if not local.ports:
            raise HarnessError(f"node {node_id} has not been started")
        self._refresh_ports(local)
        return PUBLISH_HOST, local.ports[port]

    def prometheus_server(self, directory: Path) -> ContainerServer:
        """A container on the testnet's network, at its last address (nodes take .2 up)."""
        if self.subnet is None:
            raise HarnessError("allocate() must run before prometheus_server()")
        return ContainerServer(
            self._client,
            directory,
            self.network_name,
            self.labels,
            ip=str(self.subnet.broadcast_address - 1),
        )

    def scrape_address(self, node_id: str, port: int) -> tuple[str, int]:
        return self._node(node_id).ip, port

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
        saved = self.data_dir(node_id).orchestrator_log
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
            with DataDir(local.data_dir).orchestrator_log.open("ab") as saved:
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
                    container.wait(timeout=engine.stop_timeout(self.options))
                except requests.RequestException:
                    log.warning("node %s ignored SIGTERM; killing it", local.node_id)
            self._remove(local)
        if self.subnet is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.networks.get(self.network_name).remove()
            self.subnet = None
        # Anything else with this testnet's labels (say, from a start interrupted between
        # creating a container and recording it) goes too.
        removed = engine.remove_labelled(
            self._client, lambda labels: engine.is_ours(labels, self.labels)
        )
        if removed:
            log.warning("testnet %s: removed %d untracked leftover(s)", self.testnet_id, removed)
        for local in self._nodes.values():
            local.ports = {}
