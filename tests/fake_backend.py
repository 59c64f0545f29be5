"""A fake backend for the driver's unit tests: nodes that exist only as the answers of an
`httpx.MockTransport` (a CBOR status, metrics texts, the dashboard), and a log of every call it
got, as Jepsen's recording `log-db` does. No process, no container: a `Testnet` on it starts in
milliseconds, so `Testnet`, `Node`, the faults and the metric checks are tested on their own.

It declares every capability but `Signallable`, so that a fault needing that one is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.driver.backends.base import Backend, BackendOptions
from harness.driver.backends.capabilities import NodeFiles, Partitionable, Pausable, Stoppable
from harness.driver.run import Run
from harness.driver.topology import Plan, PlannedNode
from harness.node.layout import Port
from harness.node.status import STATUS_PATH, ReplicaHealthStatus, StatusResponse, encode_status


@dataclass
class FakeNode:
    """What the fake knows of one node, and what it answers."""

    running: bool = False
    paused: bool = False
    partitioned: bool = False
    health: str = ReplicaHealthStatus.HEALTHY
    files: dict[str, bytes] = field(default_factory=dict)
    metrics: dict[int, str] = field(default_factory=dict)  # port -> exposition text

    @property
    def reachable(self) -> bool:
        return self.running and not self.paused and not self.partitioned


class FakeBackend(Backend, Pausable, Partitionable, Stoppable, NodeFiles):
    """Nodes as answers; every call logged in `calls` as (method, node id)."""

    name = "fake"

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        super().__init__(run, testnet_id, directory, options)
        self.nodes: dict[str, FakeNode] = {}
        self.calls: list[tuple[str, str]] = []
        self.requests: list[httpx.Request] = []

    def allocate(self, plan: Plan, registry_path: Path) -> Mapping[str, str]:
        self.calls.append(("allocate", self.testnet_id))
        self.nodes = {node.node_id: FakeNode() for node in plan.nodes}
        return {node.node_id: f"10.0.0.{node.index + 2}" for node in plan.nodes}

    def start_node(self, node: PlannedNode, registry_path: Path) -> None:
        self.calls.append(("start_node", node.node_id))
        self.nodes[node.node_id].running = True

    def stop_node(self, node_id: str) -> None:
        self.calls.append(("stop_node", node_id))
        self.nodes[node_id].running = False

    def node_running(self, node_id: str) -> bool:
        return self.nodes[node_id].running

    def pause_node(self, node_id: str) -> None:
        self.calls.append(("pause_node", node_id))
        self.nodes[node_id].paused = True

    def resume_node(self, node_id: str) -> None:
        self.calls.append(("resume_node", node_id))
        self.nodes[node_id].paused = False

    def partition_node(self, node_id: str) -> None:
        self.calls.append(("partition_node", node_id))
        self.nodes[node_id].partitioned = True

    def heal_node(self, node_id: str) -> None:
        self.calls.append(("heal_node", node_id))
        self.nodes[node_id].partitioned = False

    def write_node_file(self, node_id: str, relative: str, data: bytes | None) -> None:
        self.calls.append(("write_node_file", node_id))
        if data is None:
            self.nodes[node_id].files.pop(relative, None)
        else:
            self.nodes[node_id].files[relative] = data

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        return node_id, port  # the node id is the host the mock transport answers for

    def http_client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self._answer))

    def teardown(self) -> None:
        self.calls.append(("teardown", self.testnet_id))
        for node in self.nodes.values():
            node.running = False

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        node = self.nodes.get(request.url.host)
        if node is None or not node.reachable:
            raise httpx.ConnectError(f"{request.url.host} does not answer", request=request)
        port, path = request.url.port, request.url.path
        if path == STATUS_PATH:
            body = encode_status(StatusResponse(replica_health_status=node.health))
            return httpx.Response(200, content=body)
        if path == "/metrics" and port in node.metrics:
            return httpx.Response(200, text=node.metrics[port])
        if path == "/metrics":
            return httpx.Response(200, text="")
        if port == Port.DASHBOARD:
            return httpx.Response(200, text="replica state: running\n")
        return httpx.Response(404)
