"""The swarm backend: every node is a Docker Swarm service, so a testnet can span every machine
of an existing swarm. The harness must run on a manager of that swarm.

How a testnet maps onto Swarm:

- Network: one attachable overlay network per testnet, with a /24 from 10.200.0.0/13 picked at
  random and checked against the engine's networks. Services use `endpoint_mode: dnsrr`
  (virtual IPs and the ingress routing mesh need IPVS, which some engines, such as this
  project's CI machines, lack).
- Nodes: one service per node, one replica, restart on failure, hostname and network alias the
  node id. A task gets its IP from the overlay when it starts, and a new task (after a restart or
  a move to another machine) gets another one, so the registry records a node's address as its
  node id: a name that resolves to the node's current IP on the overlay (for its own programs,
  through /etc/hosts). The node's data dir (logs, pid files, fault knobs) lives in its task's
  container, never in a shared folder.
- Placement: the swarm scheduler puts each new task on the machine running the fewest, which
  spreads one-task services over the machines; a topology's machine label
  (`InternetComputer.with_machine_label`) pins a node with a `node.labels.KEY==VALUE`
  constraint.
- Registry: a `registry-service` service (`harness.node.registry.http`) serves the testnet's
  registry directory, read-only, on port 8000 under the network alias `registry`; the
  orchestrators poll it with `--registry-url`. It is the one service pinned to the harness's
  own machine, where the registry directory is written. It is created in `allocate()`, so its
  task starts while the access container does, off the nodes' path; the first node's start
  waits until it answers.
- Access: one container of the node image on the overlay network, running `microsocks` (a
  SOCKS5 proxy, Debian package), with its port published on 127.0.0.1 only. The harness's HTTP
  client (`Testnet.http`) goes through it, so `endpoint()` is simply (node id, port), resolved
  inside the overlay; nothing of a node is published on any host interface.
- Labels: services, the access container, task containers and the network carry the docker
  backend's labels (`org.harness.run-id`, `org.harness.testnet-id`, ...), so `teardown()`,
  `harness down --all` and the sweep at the start of every run remove them the same way.
- Starts wait until the node answers through the access proxy. Seen after a stop and a start
  (twice in ~130 such starts here, once in CI): the service scaled back to 1 gets no task for a
  minute, or its running task's name is missing from the overlay's DNS. A start stuck either
  way (for `NO_TASK_PATIENCE`, `UNRESOLVED_PATIENCE` seconds) asks the swarm once for a new task
  (a forced update); a start that fails anyway says what the swarm made of its tasks and what
  the overlay's DNS answers.
- Prometheus (`with_prometheus()`): a container of the Prometheus image on this machine, on
  the overlay like the access proxy, scraping every node by its name (`prometheus_container`).
- Faults: `kill_process` runs `kill` in the task's container; `stop_node`/`start_node` scale the
  service to 0 and back (a new task); `partition_node`/`heal_node` refuse, then allow again,
  every packet of the task's container but its loopback (iptables in its network namespace;
  taking it off the overlay instead loses its DNS name there, which reconnecting does not bring
  back); `pause_node` freezes the container. These use the engine of the machine the task runs
  on, which the harness reaches only for tasks on its own machine: on another machine they
  raise `HarnessError` naming it.
- Images: the node image is built here; other machines need it under the same tag, e.g. from a
  registry the user runs (`harness images push`, see README).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
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
    PUBLISH_HOST,
    TESTNET_LABEL,
    HarnessContainer,
    exec_in,
    probe_ready,
    published_port,
    ready_service,
)
from harness.driver.backends.images import IMAGE_REGISTRY_ENV, build_node_image, push_node_image
from harness.driver.backends.prometheus_container import ContainerServer
from harness.driver.errors import BackendUnavailable, HarnessError, NodeStartError
from harness.driver.logfiles import FOLLOW_INTERVAL
from harness.driver.run import Run
from harness.driver.socks import socks5_answers, socks_client
from harness.driver.topology import Plan, PlannedNode
from harness.driver.waits import wait_until
from harness.node.layout import REGISTRY_SERVICE_PORT

log = logging.getLogger(__name__)

NETWORK_POOL = ipaddress.IPv4Network("10.200.0.0/13")
TINI = "/usr/bin/tini"
PROXY_PORT = 1080
REGISTRY_ALIAS = "registry"
STARTUP_TIMEOUT = 60.0
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
FAILED_TASK_STATES = ("failed", "rejected", "orphaned")
# Refused rather than dropped: the access proxy's SOCKS handshake has no timeout in httpcore, so
# a dropped connection would hold the harness for the kernel's SYN retries (~2 min). Outgoing
# ICMP stays allowed, or the refusals themselves (ICMP port unreachable) would be refused.
_PARTITION_TAG = ("-m", "comment", "--comment", "harness-partition", "-j", "REJECT")
PARTITION_RULES = (
    ("INPUT", "!", "-i", "lo", *_PARTITION_TAG),
    ("OUTPUT", "!", "-o", "lo", "!", "-p", "icmp", *_PARTITION_TAG),
)
PLACEMENT_PATIENCE = 5.0  # seconds a task may stay pending for a reason before the start fails
# Seconds a start may be stuck (`_stuck`) before the swarm is asked for a new task: with no task
# meant to run, and with a running task whose name does not resolve.
NO_TASK_PATIENCE = 5.0
UNRESOLVED_PATIENCE = 10.0
LIVE_TASK_STATES = (
    "new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
)  # fmt: skip


def swarm_node_id(client: docker.DockerClient) -> str:
    """The swarm node id of the engine the harness talks to, which must be a manager;
    `BackendUnavailable` saying how to get one otherwise."""
    try:
        swarm = client.info().get("Swarm") or {}
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise BackendUnavailable(f"the docker engine does not answer: {exc}") from None
    if swarm.get("LocalNodeState") != "active":
        raise BackendUnavailable(
            "the docker engine is not part of a swarm; make it one with "
            "`docker swarm init --advertise-addr 127.0.0.1` (one machine) or join it to yours"
        )
    if not swarm.get("ControlAvailable"):
        raise BackendUnavailable(
            "the docker engine is a swarm worker; run the harness on a manager of the swarm"
        )
    return str(swarm["NodeID"])


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
            if shutil.which("nsenter") is None or shutil.which("iptables") is None:
                return (
                    "partitioning a swarm node needs nsenter and iptables on its machine "
                    "(Debian packages util-linux and iptables)"
                )
            if os.geteuid() != 0:
                return "partitioning a swarm node needs root (iptables in its network namespace)"
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
        return f"socks5://{PUBLISH_HOST}:{published_port(self._access, PROXY_PORT)}"

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
        access = HarnessContainer(self._image).with_name(f"{self.network_name}-access")
        access.with_kwargs(
            entrypoint=[TINI, "--", "microsocks", "-i", "0.0.0.0", "-p", str(PROXY_PORT)],
            labels={**self.labels, NODE_LABEL: "access"},
            network=self.network_name,
        )
        ports: dict[str, Any] = access.ports
        ports[f"{PROXY_PORT}/tcp"] = (PUBLISH_HOST, None)  # random host port, loopback only
        access.start()
        container = access.get_wrapped_container()

        def mapped() -> int:
            container.reload()
            if container.status != "running":
                raise HarnessError(f"the access proxy container is {container.status}")
            return published_port(container, PROXY_PORT)

        port = wait_until(mapped, "the access proxy's published port", 10.0, 0.1)
        # Published is not listening: until microsocks listens, the engine's port accepts and
        # closes, and a request through it fails ("Malformed reply" from socksio).
        wait_until(
            lambda: socks5_answers(PUBLISH_HOST, port) or None,
            f"the access proxy answering SOCKS5 on {PUBLISH_HOST}:{port}",
            self.startup_timeout,
            0.05,
        )
        self._http = socks_client(f"socks5://{PUBLISH_HOST}:{port}", timeout=2.0)
        return container

    # The registry service.
    def _create_registry(self, registry_path: Path) -> Service:
        """The registry service, created (not waited for): it serves `registry_path`, which
        has no version yet (the service answers `latest` 0 until the first is written)."""
        assert self._image is not None
        registry_path.mkdir(parents=True, exist_ok=True)  # a bind mount's source must exist
        service: Service = self._client.services.create(  # type: ignore[no-untyped-call]
            self._image,
            command=[TINI, "--", "registry-service"],
            args=["--store", "/registry", "--listen", f"0.0.0.0:{REGISTRY_SERVICE_PORT}"],
            name=f"{self.network_name}-registry",
            labels={**self.labels, NODE_LABEL: "registry"},
            container_labels={**self.labels, NODE_LABEL: "registry"},
            mounts=[
                docker.types.Mount(
                    "/registry", str(registry_path.resolve()), type="bind", read_only=True
                )
            ],
            constraints=[f"node.id=={self._machine}"],
            networks=[
                docker.types.NetworkAttachmentConfig(self.network_name, aliases=[REGISTRY_ALIAS])
            ],
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            restart_policy=docker.types.RestartPolicy(condition="any"),
        )
        return service

    def _await_registry(self) -> None:
        """Wait (once, for every node's start) until the registry service answers."""
        with self._lock:
            if self._registry_answered:
                return
            url = f"http://{REGISTRY_ALIAS}:{REGISTRY_SERVICE_PORT}/api/v1/registry/latest"
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
            f"http://{REGISTRY_ALIAS}:{REGISTRY_SERVICE_PORT}",
            str(NODE_DATA.root),
            "0.0.0.0",
            "--ic-binary-directory",
            BINARY_DIRECTORY,
        )
        labels = {**self.labels, NODE_LABEL: node.node_id}
        constraints = []
        if node.machine_label is not None:
            key, _, value = node.machine_label.partition("=")
            constraints.append(f"node.labels.{key}=={value}")
        service: Service = self._client.services.create(  # type: ignore[no-untyped-call]
            self._image,
            args=arguments,
            name=self._service_name(node.node_id),
            hostname=node.node_id,
            labels=labels,
            container_labels=labels,
            constraints=constraints,
            networks=[
                docker.types.NetworkAttachmentConfig(self.network_name, aliases=[node.node_id])
            ],
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            restart_policy=docker.types.RestartPolicy(condition="on-failure"),
            # Docker's SIGKILL comes after the orchestrator's own SIGTERM-then-SIGKILL.
            stop_grace_period=int(engine.stop_timeout(self.options) * 1e9),
        )
        return service

    def _tasks(self, local: _SwarmNode) -> list[dict[str, Any]]:
        if local.service is None:
            return []
        try:
            return list(local.service.tasks())  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return []

    def _running_tasks(self, local: _SwarmNode) -> list[dict[str, Any]]:
        return self._live(self._tasks(local))

    @staticmethod
    def _live(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Tasks meant to run and not yet ended (from `new` to `running`)."""
        return [
            t
            for t in tasks
            if t.get("DesiredState") == "running"
            and (t.get("Status") or {}).get("State") in LIVE_TASK_STATES
        ]

    def _await_ready(self, local: _SwarmNode) -> None:
        node = local.planned
        service = ready_service(node.subnet_id is not None)
        last = "nothing observed yet"
        started = time.monotonic()
        assert self._http is not None
        since = self._started_since(started)
        replaced = False
        while True:
            tasks = self._tasks(local)  # one listing a round, for both checks below
            problem = self._task_problem(tasks, since, time.monotonic() - started)
            if problem is not None:
                raise self._start_error(local, problem)
            ready, last = probe_ready(self._http, node.node_id, service.port, service)
            if ready:
                return
            waited = time.monotonic() - started
            if not replaced and waited > NO_TASK_PATIENCE:
                stuck = self._stuck(node.node_id, tasks, last, waited)
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
                    # The task replaced may end rejected ("error while removing network"):
                    # its end is the harness's doing, only the new task's state counts now.
                    since = self._started_since(time.monotonic())
            if waited > self.startup_timeout:
                raise self._start_error(
                    local, f"not ready within {self.startup_timeout:.0f} s; last: {last}"
                )
            time.sleep(0.1)

    def _stuck(
        self, name: str, tasks: list[dict[str, Any]], last: str, waited: float
    ) -> str | None:
        """Why the swarm will not bring node `name` up by itself, if it is one of the two ways
        seen after a stop and a start: no task meant to run (the service scaled back to 1, the
        orchestrator made none; a task is made within a second otherwise), or a running task
        whose name the overlay's DNS does not resolve (the access proxy, microsocks, says
        "general failure" for that) after `UNRESOLVED_PATIENCE` seconds."""
        live = self._live(tasks)
        if not live:
            return "the swarm made no task for it"
        if (
            waited > UNRESOLVED_PATIENCE
            and "General SOCKS server failure" in last
            and any((t.get("Status") or {}).get("State") == "running" for t in live)
            and self._resolve(name) is None
        ):
            return f"its task runs, but the overlay's DNS has no {name}"
        return None

    def _resolve(self, name: str) -> str | None:
        """What `name` resolves to on the overlay (asked in the access proxy's container), or
        None when it does not."""
        if self._access is None:
            return None
        try:
            code, output = exec_in(self._access, ["getent", "hosts", name])
        except (docker.errors.DockerException, requests.RequestException):
            return None
        return output.decode(errors="replace").strip() or None if code == 0 else None

    @staticmethod
    def _task_problem(tasks: list[dict[str, Any]], since: str, waited: float) -> str | None:
        """Why the node's task will not come up, if the swarm says so (`tasks`): a task created
        since `since` that failed, or one still pending with a reason (no machine satisfies its
        placement) after `PLACEMENT_PATIENCE` seconds."""
        for task in reversed(tasks):
            status = task.get("Status") or {}
            if task.get("CreatedAt", "") < since:
                continue
            state, error = status.get("State"), status.get("Err", "")
            if state in FAILED_TASK_STATES:
                return f"its task {state}: {error}"
            if state == "pending" and error and waited > PLACEMENT_PATIENCE:
                return f"the swarm cannot place it: {error}"
        return None

    @staticmethod
    def _started_since(monotonic_start: float) -> str:
        """An RFC 3339 UTC time a little before `monotonic_start`, comparable as text with
        the engine's `CreatedAt` (tasks of earlier starts do not count as this one's)."""
        wall = time.time() - (time.monotonic() - monotonic_start) - 1.0
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))

    def _start_error(self, local: _SwarmNode, reason: str) -> NodeStartError:
        output = b"".join(self._service_logs(local.planned.node_id))
        tail = output[-3000:].decode(errors="replace")
        tasks = [
            f"  {t.get('CreatedAt', '?')[:23]} {(t.get('Status') or {}).get('State')} "
            f"(desired {t.get('DesiredState')}) {(t.get('Status') or {}).get('Err', '')}".rstrip()
            for t in sorted(self._tasks(local), key=lambda t: t.get("CreatedAt", ""))[-5:]
        ]
        resolved = self._resolve(local.planned.node_id)
        return NodeStartError(
            f"node {local.planned.node_id} did not come up: {reason}\n"
            f"--- its tasks (created, state) ---\n" + ("\n".join(tasks) or "  none") + "\n"
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

    @staticmethod
    def _running_anywhere(service: Service | None) -> list[dict[str, Any]]:
        """The service's running tasks, on any machine of the swarm."""
        if service is None:
            return []
        try:
            tasks = list(service.tasks())  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return []
        return [t for t in tasks if (t.get("Status") or {}).get("State") == "running"]

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
        for rule in PARTITION_RULES:
            result = _netns_iptables(pid, "-I", *rule)
            if result.returncode != 0:
                self._drop_partition_rules(pid)
                raise HarnessError(
                    f"cannot partition node {node_id}: iptables in its network namespace said "
                    f"{result.stderr.strip()!r} (partitions need root on the node's machine)"
                )
        local.partitioned_pid = pid

    def heal_node(self, node_id: str) -> None:
        local = self._node(node_id)
        if local.partitioned_pid is None:
            return
        with contextlib.suppress(HarnessError):  # a replaced task has no rules to remove
            if self._netns_pid(node_id) == local.partitioned_pid:
                self._drop_partition_rules(local.partitioned_pid)
        local.partitioned_pid = None

    def _netns_pid(self, node_id: str) -> int:
        container = self._container(node_id)
        container.reload()
        pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            raise HarnessError(f"node {node_id} is not running")
        return pid

    @staticmethod
    def _drop_partition_rules(pid: int) -> None:
        for rule in PARTITION_RULES:
            for _ in range(100):
                deleted = _netns_iptables(pid, "-D", *rule)
                if deleted.returncode != 0:
                    break

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


def _netns_iptables(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """iptables in the network namespace of process `pid` (a container's)."""
    nsenter, iptables = shutil.which("nsenter"), shutil.which("iptables")
    if nsenter is None or iptables is None:
        raise BackendUnavailable(
            "partitioning a swarm node needs nsenter and iptables on its machine "
            "(Debian packages util-linux and iptables)"
        )
    return subprocess.run(
        [nsenter, "-t", str(pid), "-n", iptables, "-w", *args],
        capture_output=True,
        text=True,
        check=False,
    )
