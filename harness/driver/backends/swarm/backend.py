"""`SwarmBackend`: a testnet's nodes as Swarm services on a per-testnet overlay network, its
faults and logs through the task containers on this machine (the design is in the package's
docstring)."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import os
import signal
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import httpx
import requests
from docker.models.containers import Container
from docker.models.services import Service
from rich.console import Console

from harness.driver.backends import engine
from harness.driver.backends.base import Backend, BackendOptions
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
    TESTNET_LABEL,
    exec_in,
    probe_ready,
    ready_service,
)
from harness.driver.backends.images import IMAGE_REGISTRY_ENV, build_node_image, push_node_image
from harness.driver.backends.prometheus_container import ContainerServer
from harness.driver.backends.swarm import access, partition, services
from harness.driver.backends.swarm import tasks as swarm_tasks
from harness.driver.backends.swarm.manager import swarm_node_id
from harness.driver.backends.swarm.tasks import Task
from harness.driver.errors import HarnessError, NodeNotReady, NodeStartError
from harness.driver.logfiles import FOLLOW_INTERVAL
from harness.driver.run import Run
from harness.driver.socks import socks_client
from harness.driver.topology import Plan, PlannedNode
from harness.driver.waits import GiveUp, wait_until

log = logging.getLogger(__name__)

NETWORK_POOL = ipaddress.IPv4Network("10.200.0.0/13")
STARTUP_TIMEOUT = 60.0
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


@dataclass
class _SwarmNode:
    planned: PlannedNode
    service: Service | None = None
    partitioned_pid: int | None = None  # whose network namespace has the partition rules


class SwarmBackend(
    Backend, Pausable, Partitionable, Stoppable, Signallable, NodeFiles, PrometheusBeside
):
    """Nodes as Swarm services on a per-testnet overlay network."""

    name = "swarm"

    @classmethod
    def prepare(cls, console: Console) -> None:
        if not os.environ.get(IMAGE_REGISTRY_ENV):  # else each start pushes (and builds) it
            build_node_image(console=console)

    @classmethod
    def sweep(
        cls, doomed_run: Callable[[str], bool], testnet_id: str | None = None
    ) -> dict[str, int]:
        return engine.sweep_labelled(cls.name, doomed_run, testnet_id)

    def lacks(self, capability: type) -> str | None:
        if capability is Partitionable:
            reason = partition.unavailable()
            if reason is not None:
                return reason
        return super().lacks(capability)

    def http_client(self) -> httpx.Client:
        if self.http_proxy is None:
            raise HarnessError("allocate() must run before the swarm backend has a client")
        return socks_client(self.http_proxy)

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        super().__init__(run, testnet_id, directory, options)
        self._client = engine.engine()
        self._machine = swarm_node_id(self._client)
        self.network_name = f"harness-{run.run_id}-{testnet_id}"
        self._image: str | None = None
        self._nodes: dict[str, _SwarmNode] = {}
        self._access: Container | None = None
        self._registry: Service | None = None
        self._registry_answered = False
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self.startup_timeout = STARTUP_TIMEOUT

    @property
    def labels(self) -> dict[str, str]:
        return engine.testnet_labels(self.run.run_id, self.testnet_id, self.name)

    @property
    def http_proxy(self) -> str | None:
        if self._access is None:
            return None
        return access.proxy_url(self._access)

    # Addresses, network, access.
    def allocate(self, plan: Plan, registry_path: Path) -> Mapping[str, str]:
        if len(plan.nodes) > 250:
            raise HarnessError(f"the swarm backend runs at most 250 nodes, not {len(plan.nodes)}")
        registry = os.environ.get(IMAGE_REGISTRY_ENV)
        if registry:
            self._image = push_node_image(registry, self._client)
        else:
            self._image = build_node_image(client=self._client)
            machines = len(self._client.nodes.list())
            if machines > 1:
                log.warning(
                    "the swarm has %d machines but %s is not set: the others must have the "
                    "node image %s already (see `harness images push`)",
                    machines,
                    IMAGE_REGISTRY_ENV,
                    self._image,
                )
        engine.create_network(
            self._client, self.network_name, NETWORK_POOL, self.labels, driver="overlay"
        )
        # The registry service's task starts while the access container does; the first
        # `start_node()` waits until it answers.
        self._registry = self._create_registry(registry_path)
        self._access = self._start_access()
        for node in plan.nodes:
            self._nodes[node.node_id] = _SwarmNode(node)
        return {node.node_id: node.node_id for node in plan.nodes}

    def _start_access(self) -> Container:
        """The SOCKS5 proxy on the overlay that the harness reaches every node through."""
        assert self._image is not None
        container = access.start_access(
            self._image,
            f"{self.network_name}-access",
            self.labels,
            self.network_name,
            self.startup_timeout,
        )
        self._http = socks_client(access.proxy_url(container), timeout=2.0)
        return container

    # The registry service.
    def _create_registry(self, registry_path: Path) -> Service:
        assert self._image is not None
        return services.create_registry_service(
            self._client,
            self._image,
            registry_path,
            name=f"{self.network_name}-registry",
            labels={**self.labels, NODE_LABEL: "registry"},
            network=self.network_name,
            machine=self._machine,
        )

    def _await_registry(self) -> None:
        """Wait (once, for every node's start) until the registry service answers."""
        with self._lock:
            if self._registry_answered:
                return
            url = f"{services.REGISTRY_URL}/api/v1/registry/latest"
            wait_until(
                lambda: self._answers(url) or None,
                f"the registry service of testnet {self.testnet_id}",
                self.startup_timeout,
                0.1,
            )
            self._registry_answered = True

    def _answers(self, url: str) -> bool:
        assert self._http is not None
        try:
            return self._http.get(url).status_code == 200
        except httpx.TransportError:
            return False

    # Life cycle.
    def _node(self, node_id: str) -> _SwarmNode:
        return self.known(self._nodes, node_id)

    def _service_name(self, node_id: str) -> str:
        return f"{self.network_name}-{node_id}"

    def start_node(self, node: PlannedNode, registry_path: Path) -> None:
        if self._image is None:
            raise HarnessError("allocate() must run before start_node()")
        local = self._node(node.node_id)
        self._await_registry()
        if local.service is None:
            local.service = self._create_service(node)
        else:
            if self._running_tasks(local):
                raise HarnessError(f"node {node.node_id} is already running")
            local.service.reload()  # an update must name the service's current version
            local.service.scale(1)
        self._await_ready(local)

    def _create_service(self, node: PlannedNode) -> Service:
        assert self._image is not None
        arguments = self.orchestrator_arguments(
            node.node_id,
            services.REGISTRY_URL,
            str(NODE_DATA.root),
            "0.0.0.0",
            "--ic-binary-directory",
            BINARY_DIRECTORY,
        )
        return services.create_node_service(
            self._client,
            self._image,
            node,
            name=self._service_name(node.node_id),
            arguments=arguments,
            labels={**self.labels, NODE_LABEL: node.node_id},
            network=self.network_name,
            stop_timeout=engine.stop_timeout(self.options),
            binaries=tuple(self.options.binaries.values()),
        )

    def _tasks(self, local: _SwarmNode) -> list[Task]:
        return self._service_tasks(local.service)

    @staticmethod
    def _service_tasks(service: Service | None) -> list[Task]:
        """The service's tasks, on any machine of the swarm (none for a service gone)."""
        if service is None:
            return []
        try:
            return list(service.tasks())  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return []

    def _running_tasks(self, local: _SwarmNode) -> list[Task]:
        return swarm_tasks.live(self._tasks(local))

    def _await_ready(self, local: _SwarmNode) -> None:
        node = local.planned
        service = ready_service(node.subnet_id is not None)
        started = time.monotonic()
        since = swarm_tasks.created_since(time.time())
        assert self._http is not None
        http = self._http
        replaced = False
        last = "nothing observed yet"

        def ready() -> bool:
            nonlocal since, replaced, last
            tasks = self._tasks(local)  # one listing a round, for both checks below
            waited = time.monotonic() - started
            problem = swarm_tasks.problem(tasks, since, waited)
            if problem is not None:
                raise GiveUp(problem)
            up, last = probe_ready(http, node.node_id, service.port, service)
            if up:
                return True
            stuck = (
                None
                if replaced
                else swarm_tasks.stuck(node.node_id, tasks, last, waited, self._resolve)
            )
            if stuck is not None:
                log.warning(
                    "node %s: %s after %.0f s; asking the swarm for a new task",
                    node.node_id,
                    stuck,
                    waited,
                )
                assert local.service is not None
                local.service.reload()
                local.service.force_update()  # type: ignore[no-untyped-call]
                replaced = True
                # The task replaced may end rejected ("error while removing network"): its
                # end is the harness's doing, only the new task's state counts now.
                since = swarm_tasks.created_since(time.time())
            raise HarnessError(last)  # not yet

        try:
            wait_until(ready, f"node {node.node_id}", self.startup_timeout, interval=0.1)
        except GiveUp as exc:
            raise self._start_error(local, str(exc)) from None
        except NodeNotReady:
            raise self._start_error(
                local, f"not ready within {self.startup_timeout:.0f} s; last: {last}"
            ) from None

    def _resolve(self, name: str) -> str | None:
        """What `name` resolves to on the overlay, or None when it does not."""
        if self._access is None:
            return None
        return access.resolve(self._access, name)

    def _start_error(self, local: _SwarmNode, reason: str) -> NodeStartError:
        output = b"".join(self._service_logs(local.planned.node_id))
        tail = output[-3000:].decode(errors="replace")
        tasks = swarm_tasks.summary(self._tasks(local))
        resolved = self._resolve(local.planned.node_id)
        return NodeStartError(
            f"node {local.planned.node_id} did not come up: {reason}\n"
            f"--- its tasks (created, state) ---\n{tasks}\n"
            f"--- {local.planned.node_id} on the overlay's DNS: {resolved or 'no record'}\n"
            f"--- orchestrator output (docker service logs) ---\n{tail}"
        )

    def node_running(self, node_id: str) -> bool:
        local = self._node(node_id)
        return local.service is not None and bool(self._running_tasks(local))

    def stop_node(self, node_id: str) -> None:
        """Scale the node's service to 0: Docker stops its task (SIGTERM, SIGKILL later)."""
        local = self._node(node_id)
        if local.service is None:
            raise HarnessError(f"node {node_id} has not been started")
        with contextlib.suppress(HarnessError):
            self.resume_node(node_id)  # a frozen container cannot stop
        local.service.reload()
        local.service.scale(0)
        # As in `teardown`: the swarm agent would stop the task seconds later.
        self._stop_now(self._local_containers(node_id), remove=False)
        wait_until(
            lambda: not self._running_anywhere(local.service),
            f"node {node_id}'s task to stop",
            engine.stop_timeout(self.options) + 10,
            0.1,
        )

    # The task's container (on this machine). Found by the service's name, so that a backend
    # attached to a testnet another process started (`harness logs`) finds them too.
    def _service(self, node_id: str) -> Service | None:
        local = self._nodes.get(node_id)
        if local is not None and local.service is not None:
            return local.service
        try:
            service: Service = self._client.services.get(  # type: ignore[no-untyped-call]
                self._service_name(node_id)
            )
        except docker.errors.NotFound:
            return None
        return service

    def _local_containers(self, node_id: str) -> list[Container]:
        """The node's task containers on this machine."""
        service = self._service_name(node_id)
        return list(
            self._client.containers.list(
                filters={"label": f"{SERVICE_NAME_LABEL}={service}"}, ignore_removed=True
            )
        )

    def _testnet_containers(self) -> list[Container]:
        """Every container of this testnet on this machine (tasks, access proxy)."""
        return [
            container
            for container in self._client.containers.list(
                all=True,
                filters={"label": f"{TESTNET_LABEL}={self.testnet_id}"},
                ignore_removed=True,
            )
            if engine.is_ours(container.labels, self.labels)
        ]

    def _stop_now(self, containers: list[Container], remove: bool) -> None:
        """Stop the containers (their stop signal, SIGKILL after the grace period), all at once,
        and remove them too with `remove`; a task shut down by its agent meanwhile is no error."""

        def stop(container: Container) -> None:
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                container.stop(timeout=engine.stop_timeout(self.options))
                if remove:
                    container.remove(force=True)

        if containers:
            with ThreadPoolExecutor(min(16, len(containers))) as pool:
                list(pool.map(stop, containers))

    @classmethod
    def _running_anywhere(cls, service: Service | None) -> list[Task]:
        """The service's running tasks, on any machine of the swarm."""
        return swarm_tasks.running(cls._service_tasks(service))

    def _container(self, node_id: str) -> Container:
        containers = self._local_containers(node_id)
        if containers:
            return containers[0]
        running = self._running_anywhere(self._service(node_id))
        if running:
            machine = running[0].get("NodeID", "?")
            raise HarnessError(
                f"node {node_id} runs on swarm machine {machine}, not on this one: its container "
                "is reachable through that machine's engine only"
            )
        raise HarnessError(f"node {node_id} is not running")

    def pause_node(self, node_id: str) -> None:
        self._container(node_id).pause()

    def resume_node(self, node_id: str) -> None:
        container = self._container(node_id)
        if container.status == "paused":
            container.unpause()

    def partition_node(self, node_id: str) -> None:
        """Refuse every packet to and from the node's container except its loopback: nothing
        reaches it, it reaches nothing (neither the registry nor the access proxy). Done with
        iptables in the container's network namespace, entered from this machine (root): taking
        the container off the overlay instead loses its DNS name there, which connecting it
        again does not bring back."""
        local = self._node(node_id)
        pid = self._netns_pid(node_id)
        refused = partition.insert_rules(pid)
        if refused is not None:
            raise HarnessError(
                f"cannot partition node {node_id}: iptables in its network namespace said "
                f"{refused!r} (partitions need root on the node's machine)"
            )
        local.partitioned_pid = pid

    def heal_node(self, node_id: str) -> None:
        local = self._node(node_id)
        if local.partitioned_pid is None:
            return
        with contextlib.suppress(HarnessError):  # a replaced task has no rules to remove
            if self._netns_pid(node_id) == local.partitioned_pid:
                partition.drop_rules(local.partitioned_pid)
        local.partitioned_pid = None

    def _netns_pid(self, node_id: str) -> int:
        container = self._container(node_id)
        container.reload()
        pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            raise HarnessError(f"node {node_id} is not running")
        return pid

    def _exec(self, node_id: str, command: list[str]) -> tuple[int, bytes]:
        return exec_in(self._container(node_id), command)

    def kill_process(self, node_id: str, process: str, sig: int = signal.SIGKILL) -> int:
        return engine.signal_program(self._container(node_id), node_id, process, sig)

    def write_node_file(self, node_id: str, relative: str, data: bytes | None) -> None:
        if data is None:
            self._exec(node_id, ["rm", "-f", f"{NODE_DATA.root}/{relative}"])
            return
        parent, _, name = f"{NODE_DATA.root}/{relative}".rpartition("/")
        self._exec(node_id, ["mkdir", "-p", parent])
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        if not self._container(node_id).put_archive(parent, archive.getvalue()):
            raise HarnessError(f"node {node_id}: cannot write {relative}")

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        self._node(node_id)
        return node_id, port  # resolved by the access proxy, inside the overlay

    def prometheus_server(self, directory: Path) -> ContainerServer:
        """A container on this machine, on the testnet's overlay (as the access proxy is)."""
        return ContainerServer(self._client, directory, self.network_name, self.labels)

    def scrape_address(self, node_id: str, port: int) -> tuple[str, int]:
        return self.endpoint(node_id, port)  # the node's alias on the overlay

    # Logs: the orchestrator's output from the service (wherever its task runs), the programs'
    # log files from the task's container (on this machine).
    def _service_logs(self, node_id: str, follow: bool = False) -> Iterator[bytes]:
        service = self._service(node_id)
        if service is None:
            return
        try:
            yield from service.logs(stdout=True, stderr=True, timestamps=True, follow=follow)
        except (docker.errors.DockerException, requests.RequestException):
            return

    def log_names(self, node_id: str) -> list[str]:
        try:
            code, output = self._exec(node_id, ["ls", str(NODE_DATA.logs)])
        except HarnessError:
            return ["orchestrator"]  # its task runs on another machine, or not at all
        names = output.decode(errors="replace").split() if code == 0 else []
        return [
            "orchestrator",
            *sorted(n.removesuffix(".log") for n in names if n.endswith(".log")),
        ]

    def read_log(self, node_id: str, process: str, follow: bool = False) -> Iterator[bytes]:
        if process == "orchestrator":
            if self._service(node_id) is None:
                raise self.no_log(node_id, process)
            return self._service_logs(node_id, follow)
        path = str(NODE_DATA.log(process))
        code, _ = self._exec(node_id, ["test", "-f", path])
        if code != 0:
            raise self.no_log(node_id, process)
        return self._file_in_task(node_id, path, follow)

    def _file_in_task(self, node_id: str, path: str, follow: bool) -> Iterator[bytes]:
        """A file in the node's task container; following it by asking for what was added
        since (nothing is left running in the container when the reader stops)."""
        offset = 0
        while True:
            try:
                code, chunk = self._exec(node_id, ["tail", "-c", f"+{offset + 1}", path])
            except HarnessError:
                return  # the task is gone
            if code != 0:
                return
            if chunk:
                offset += len(chunk)
                yield chunk
            if not follow:
                return
            time.sleep(FOLLOW_INTERVAL)

    def log_sizes(self, node_id: str) -> dict[str, int]:
        sizes = {"orchestrator": sum(len(chunk) for chunk in self._service_logs(node_id))}
        try:
            code, output = self._exec(
                node_id, ["find", str(NODE_DATA.logs), "-name", "*.log", "-printf", "%s %f\\n"]
            )
        except HarnessError:
            return sizes
        for line in output.decode(errors="replace").splitlines() if code == 0 else []:
            size, _, name = line.partition(" ")
            if size.isdigit():
                sizes[name.removesuffix(".log")] = int(size)
        return sizes

    def collect_logs(self, node_id: str, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        (destination / "orchestrator.log").write_bytes(b"".join(self._service_logs(node_id)))
        try:
            container = self._container(node_id)
            stream, _ = container.get_archive(str(NODE_DATA.logs))
        except (HarnessError, docker.errors.DockerException, requests.RequestException) as exc:
            (destination / "logs-unavailable.txt").write_text(
                f"the programs' logs of node {node_id} could not be read: {exc}\n"
            )
            return
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        (destination / Path(member.name).name).write_bytes(extracted.read())

    def teardown(self) -> None:
        services = [local.service for local in self._nodes.values() if local.service is not None]
        if self._registry is not None:
            services.append(self._registry)
        for service in services:
            with contextlib.suppress(docker.errors.NotFound, requests.RequestException):
                service.remove()  # type: ignore[no-untyped-call]
        if self._access is not None:
            with contextlib.suppress(docker.errors.NotFound, requests.RequestException):
                self._access.remove(force=True)
        if self._http is not None:
            self._http.close()
        for local in self._nodes.values():
            local.service = None
        self._registry = self._access = self._http = None
        self._registry_answered = False
        # Removing a service has the swarm agent stop its task (SIGTERM, then SIGKILL after the
        # grace period), but only seconds later (~3 s here), and remove its container as long
        # again after: the task containers on this machine are stopped the same way and removed
        # at once, all at the same time. Those on other machines are their agents' to stop;
        # wait for that before removing what is left by force.
        self._stop_now(self._testnet_containers(), remove=True)
        with contextlib.suppress(HarnessError):
            wait_until(
                lambda: not self._testnet_containers() or None,
                f"the task containers of testnet {self.testnet_id} to stop",
                engine.stop_timeout(self.options) + 5,
                0.2,
            )
        removed = engine.remove_labelled(
            self._client, lambda labels: engine.is_ours(labels, self.labels)
        )
        if removed:
            log.debug("testnet %s: removed %d leftover(s)", self.testnet_id, removed)
        # A removed overlay network stays listed for a moment (it would look like a leftover
        # to the next sweep, whose removal would fail: it is gone already).
        with contextlib.suppress(HarnessError):
            wait_until(
                lambda: (
                    not [
                        network
                        for network in self._client.networks.list(
                            filters={"label": f"{TESTNET_LABEL}={self.testnet_id}"}
                        )
                        if engine.is_ours(network.attrs.get("Labels") or {}, self.labels)
                    ]
                    or None
                ),
                f"the network of testnet {self.testnet_id} to go",
                10.0,
                0.05,
            )
