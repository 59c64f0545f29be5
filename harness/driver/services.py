"""What a node serves now and when it is ready, from the programs' descriptions
(`harness.node.catalog`) and the latest registry version: the one readiness the driver has.

A node's `Service`s are the endpoints of the programs that run on it at that registry version
(the orchestrator's on every node), outermost program first. A node is ready when every
service that has a readiness check answers ready: an API endpoint's `/api/v2/status` says
healthy, a health endpoint's path answers 2xx; each is asked with the Host its program answers
to. `unready` judges one answer; the sync waits (`Node.await_ready`) and the async probes
(`harness.driver.aio`) both use it, with their own HTTP clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.driver.errors import HarnessError
from harness.node.catalog import PROGRAMS
from harness.node.description import Endpoint, Host, Program, Serves
from harness.node.registry.records import RegistrySnapshot
from harness.node.status import STATUS_PATH, StatusDecodeError, decode_status


@dataclass(frozen=True)
class Service:
    """One endpoint a node serves: its program and the endpoint's description."""

    program: Program
    endpoint: Endpoint

    @property
    def name(self) -> str:
        """Its name among the node's URLs (`describe()`)."""
        return self.endpoint.name

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def serves(self) -> Serves:
        return self.endpoint.serves

    @property
    def ready_path(self) -> str | None:
        """The path asked to know whether it is ready; None when it has no readiness check."""
        if self.serves is Serves.API:
            return STATUS_PATH
        if self.serves is Serves.HEALTH:
            return self.endpoint.path
        return None

    def host(self, domain: str | None) -> str | None:
        """The Host header it answers to on a node whose domain is `domain`."""
        host = self.endpoint.host
        return domain if host is Host.NODE_DOMAIN else host


def programs_on(snapshot: RegistrySnapshot, node_id: str) -> list[Program]:
    """The programs that run on the node at this registry version, in start order."""
    return [p for p in PROGRAMS if p.runs_on.admits_node(snapshot, node_id)]


def services_on(snapshot: RegistrySnapshot, node_id: str) -> list[Service]:
    """What the node serves at this registry version, the outermost program first (the one a
    client reaches first: ic-gateway before the replica, the orchestrator last)."""
    return [
        Service(program, endpoint)
        for program in reversed(programs_on(snapshot, node_id))
        for endpoint in program.endpoints
    ]


def service_named(name: str) -> Service:
    """The service that a node's URL called `name` (in `describe()`) is, whichever node."""
    for program in PROGRAMS:
        for endpoint in program.endpoints:
            if endpoint.name == name:
                return Service(program, endpoint)
    raise HarnessError(f"no node program serves a URL called {name!r}")


def service_on_port(snapshot: RegistrySnapshot, node_id: str, port: int) -> Service | None:
    """The service on `port` of the node: of the programs it runs now, else of any program."""
    for service in services_on(snapshot, node_id):
        if service.port == port:
            return service
    for program in PROGRAMS:
        for endpoint in program.endpoints:
            if endpoint.port == port:
                return Service(program, endpoint)
    return None


def unready(service: Service, status_code: int, content: bytes) -> str | None:
    """None when this answer to `service.ready_path` says the service is ready; else what it
    says instead."""
    if service.serves is Serves.API:
        if status_code >= 400:
            return f"{status_code}: {content[:200].decode(errors='replace')}"
        try:
            status = decode_status(content)
        except StatusDecodeError as exc:
            return f"{status_code}: {exc}"
        return None if status.is_healthy else f"health {status.replica_health_status}"
    if 200 <= status_code < 300:
        return None
    return f"answered {status_code}"
