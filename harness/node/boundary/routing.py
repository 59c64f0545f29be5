"""Which replica serves a request: the IC API routes, the canister → subnet rule, round-robin.

Routes (as ic-gateway's API router has them; anything else is 404, a known path with another
method is 405):

- ``GET /api/v2/status`` → any healthy replica;
- ``POST /api/v2|v3/canister/{id}/query|call|read_state``, ``POST /api/v4/canister/{id}/call``
  → a healthy replica of the subnet hosting the canister;
- ``POST /api/v2/subnet/{id}/read_state``, ``POST /api/v3/subnet/{id}/read_state|query``,
  ``POST /api/v4/subnet/{id}/call`` → a healthy replica of that subnet;
- ``GET /health`` → answered by ic-boundary itself.

Canister → subnet. Our registry has no canister ranges (no routing table), so the subnet is
derived from the canister id by rendezvous hashing, our stand-in for the IC's routing table:
every subnet id gets the score ``sha256(subnet_id + "/" + canister_id)`` and the highest score
wins (`subnet_for_canister`). It is stable across processes and versions, and adding a subnet
moves only the canisters the new subnet wins; removing one moves only its own canisters.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from harness.node.boundary.config import StaticUpstream
from harness.node.registry import RegistrySnapshot


class Target(enum.Enum):
    """What decides the subnet of a request."""

    ANY = "any"
    CANISTER = "canister"
    SUBNET = "subnet"
    HEALTH = "health"


@dataclass(frozen=True)
class Route:
    """A request path matched to an IC API route."""

    target: Target
    request_type: str
    principal: str | None = None


@dataclass(frozen=True)
class RouteMismatch:
    """A path that is no route (404) or a route called with the wrong method (405)."""

    status: int
    message: str
    allow: str | None = None


_CANISTER_METHODS = {
    "v2": frozenset({"query", "call", "read_state"}),
    "v3": frozenset({"query", "call", "read_state"}),
    "v4": frozenset({"call"}),
}
_SUBNET_METHODS = {
    "v2": frozenset({"read_state"}),
    "v3": frozenset({"read_state", "query"}),
    "v4": frozenset({"call"}),
}


def match_route(method: str, path: str) -> Route | RouteMismatch:
    """Match `path` against the IC API routes; see the module docstring for the list."""
    route, allowed = _match_path(path)
    if route is None:
        return RouteMismatch(404, f"no route for {path}")
    if method != allowed:
        return RouteMismatch(405, f"{path} takes {allowed}, not {method}", allow=allowed)
    return route


def _match_path(path: str) -> tuple[Route | None, str]:
    if path == "/health":
        return Route(Target.HEALTH, "health"), "GET"
    if path == "/api/v2/status":
        return Route(Target.ANY, "status"), "GET"
    parts = path.split("/")
    # "", "api", version, kind, principal, endpoint
    # A dot segment is no principal: the client forwarding it would resolve it.
    if len(parts) != 6 or parts[0] or parts[1] != "api" or parts[4] in ("", ".", ".."):
        return None, ""
    version, kind, principal, endpoint = parts[2:]
    if kind == "canister" and endpoint in _CANISTER_METHODS.get(version, ()):
        return Route(Target.CANISTER, endpoint, principal), "POST"
    if kind == "subnet" and endpoint in _SUBNET_METHODS.get(version, ()):
        return Route(Target.SUBNET, endpoint, principal), "POST"
    return None, ""


def subnet_for_canister(canister_id: str, subnet_ids: Iterable[str]) -> str | None:
    """The subnet hosting `canister_id` by our rendezvous rule, None when there is no subnet."""

    def score(subnet_id: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"{subnet_id}/{canister_id}".encode()).digest(), subnet_id

    return max(subnet_ids, key=score, default=None)


@dataclass(frozen=True)
class Replica:
    """A replica's public API: the node and its base URL (``http://ip:port``)."""

    node_id: str
    url: str

    def __str__(self) -> str:
        return self.url if self.node_id == self.url else f"{self.node_id} ({self.url})"


@dataclass(frozen=True)
class RoutingTable:
    """Subnet id → its replicas, in registry order, at one registry version (0 = static)."""

    subnets: Mapping[str, tuple[Replica, ...]] = field(default_factory=dict)
    version: int = 0

    @property
    def replicas(self) -> frozenset[Replica]:
        return frozenset(itertools.chain.from_iterable(self.subnets.values()))

    @classmethod
    def from_snapshot(cls, snapshot: RegistrySnapshot) -> RoutingTable:
        """Every subnet's members are replicas at ``http://<node.ip>:<node.http_port>``."""
        subnets = {}
        for subnet_id, subnet in sorted(snapshot.subnets.items()):
            replicas = []
            for node_id in subnet.members:
                node = snapshot.nodes[node_id]
                host = f"[{node.ip}]" if ":" in node.ip else node.ip
                replicas.append(Replica(node_id, f"http://{host}:{node.http_port}"))
            subnets[subnet_id] = tuple(replicas)
        return cls(subnets, snapshot.version)

    @classmethod
    def from_upstreams(cls, upstreams: Iterable[StaticUpstream]) -> RoutingTable:
        subnets: dict[str, list[Replica]] = {}
        for upstream in upstreams:
            replicas = subnets.setdefault(upstream.subnet_id, [])
            if all(r.url != upstream.url for r in replicas):
                replicas.append(Replica(upstream.url, upstream.url))
        return cls({sid: tuple(rs) for sid, rs in sorted(subnets.items())})


class NoReplica(Exception):
    """No replica can serve the request; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Balancer:
    """The routing table, the healthy replicas in it, and round-robin among them."""

    def __init__(self, table: RoutingTable | None = None) -> None:
        self.table = table or RoutingTable()
        self.healthy: frozenset[Replica] = frozenset()
        self._turn: dict[str, int] = {}

    def set_table(self, table: RoutingTable) -> None:
        """Use a new table; replicas that left it are no longer healthy."""
        self.table = table
        self.healthy = self.healthy & table.replicas

    def set_healthy(self, healthy: Iterable[Replica]) -> None:
        self.healthy = frozenset(healthy) & self.table.replicas

    def mark_unhealthy(self, replica: Replica) -> None:
        """A replica that refused a connection waits for the next probe to be used again."""
        self.healthy = self.healthy - {replica}

    def healthy_in(self, subnet_id: str) -> list[Replica]:
        return [r for r in self.table.subnets.get(subnet_id, ()) if r in self.healthy]

    def subnet_of(self, route: Route) -> str | None:
        """The subnet a canister or subnet route goes to; None for "any replica"."""
        if route.target is Target.CANISTER:
            assert route.principal is not None
            subnet_id = subnet_for_canister(route.principal, self.table.subnets)
            if subnet_id is None:
                raise NoReplica(503, f"no subnet for canister {route.principal}: no subnets known")
            return subnet_id
        if route.target is Target.SUBNET:
            assert route.principal is not None
            if route.principal not in self.table.subnets:
                raise NoReplica(404, f"subnet {route.principal} not found")
            return route.principal
        return None

    def candidates(self, subnet_id: str | None) -> list[tuple[str, Replica]]:
        """Healthy replicas as (subnet id, replica), the next in round-robin first; None means
        any subnet. Raise `NoReplica` (503) when none is healthy."""
        if subnet_id is None:
            pool = [(sid, r) for sid in self.table.subnets for r in self.healthy_in(sid)]
        else:
            pool = [(subnet_id, r) for r in self.healthy_in(subnet_id)]
        if not pool:
            where = "any subnet" if subnet_id is None else f"subnet {subnet_id}"
            raise NoReplica(503, f"no healthy replica for {where}")
        key = "*" if subnet_id is None else subnet_id
        turn = self._turn.get(key, 0) % len(pool)
        self._turn[key] = turn + 1
        return pool[turn:] + pool[:turn]
