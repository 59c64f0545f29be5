"""Registry records as frozen dataclasses, with strict parsing and the lookups nodes need."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.node.layout import Port

FEATURE_IC_GATEWAY = "ic_gateway"
KNOWN_FEATURES = frozenset({FEATURE_IC_GATEWAY})


class RegistryFormatError(ValueError):
    """A registry version that does not follow the format in `harness.node.registry`."""


class SubnetType(enum.StrEnum):
    """Subnet types, spelled as the IC's serde names them."""

    APPLICATION = "application"
    SYSTEM = "system"
    VERIFIED_APPLICATION = "verified_application"
    CLOUD_ENGINE = "cloud_engine"


@dataclass(frozen=True)
class SubnetRecord:
    subnet_type: SubnetType
    members: tuple[str, ...]
    replica_version: str


@dataclass(frozen=True)
class NodeRecord:
    ip: str
    http_port: int = Port.REPLICA_HTTP
    metrics_port: int = Port.REPLICA_METRICS
    domain: str | None = None
    features: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ApiBoundaryNodeRecord:
    version: str


@dataclass(frozen=True)
class RegistrySnapshot:
    """All records at one registry version."""

    version: int
    subnets: Mapping[str, SubnetRecord] = field(default_factory=dict)
    nodes: Mapping[str, NodeRecord] = field(default_factory=dict)
    api_boundary_nodes: Mapping[str, ApiBoundaryNodeRecord] = field(default_factory=dict)
    unassigned_nodes_version: str = "0.0.0"

    # Lookups (the orchestrator's registry helper, as in the IC's registry_helper.rs).
    def subnet_of(self, node_id: str) -> str | None:
        """The subnet the node is a member of, or None when it is unassigned."""
        for subnet_id, subnet in self.subnets.items():
            if node_id in subnet.members:
                return subnet_id
        return None

    def subnet_type(self, subnet_id: str) -> SubnetType | None:
        subnet = self.subnets.get(subnet_id)
        return None if subnet is None else subnet.subnet_type

    def replica_version(self, subnet_id: str) -> str | None:
        subnet = self.subnets.get(subnet_id)
        return None if subnet is None else subnet.replica_version

    def node_domain(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        return None if node is None else node.domain

    def node_has_feature(self, node_id: str, feature: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and feature in node.features

    def api_boundary_node_version(self, node_id: str) -> str | None:
        record = self.api_boundary_nodes.get(node_id)
        return None if record is None else record.version

    # Serialisation.
    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "subnets": {
                sid: {
                    "subnet_type": s.subnet_type.value,
                    "members": list(s.members),
                    "replica_version": s.replica_version,
                }
                for sid, s in self.subnets.items()
            },
            "nodes": {
                nid: {
                    "ip": n.ip,
                    "http_port": n.http_port,
                    "metrics_port": n.metrics_port,
                    "domain": n.domain,
                    "features": sorted(n.features),
                }
                for nid, n in self.nodes.items()
            },
            "api_boundary_nodes": {
                nid: {"version": b.version} for nid, b in self.api_boundary_nodes.items()
            },
            "unassigned_nodes_version": self.unassigned_nodes_version,
        }

    @classmethod
    def from_json(cls, data: Any) -> RegistrySnapshot:
        """Parse and validate; raise `RegistryFormatError` naming the key path that is wrong."""
        top = _mapping(
            data,
            "registry",
            {"version", "subnets", "nodes", "api_boundary_nodes", "unassigned_nodes_version"},
        )
        version = _int(top.get("version"), "version", minimum=1)
        nodes = {
            _id(nid, "nodes"): _node(raw, f"nodes.{nid}")
            for nid, raw in _mapping(top.get("nodes", {}), "nodes").items()
        }
        subnets = {
            _id(sid, "subnets"): _subnet(raw, f"subnets.{sid}")
            for sid, raw in _mapping(top.get("subnets", {}), "subnets").items()
        }
        boundary = {
            _id(nid, "api_boundary_nodes"): ApiBoundaryNodeRecord(
                _str(
                    _mapping(raw, f"api_boundary_nodes.{nid}", {"version"}).get("version"),
                    f"api_boundary_nodes.{nid}.version",
                )
            )
            for nid, raw in _mapping(
                top.get("api_boundary_nodes", {}), "api_boundary_nodes"
            ).items()
        }
        snapshot = cls(
            version=version,
            subnets=subnets,
            nodes=nodes,
            api_boundary_nodes=boundary,
            unassigned_nodes_version=_str(
                top.get("unassigned_nodes_version", "0.0.0"), "unassigned_nodes_version"
            ),
        )
        snapshot.validate()
        return snapshot

    def validate(self) -> None:
        """Check cross-record consistency; raise `RegistryFormatError` on the first problem."""
        owner: dict[str, str] = {}
        for subnet_id, subnet in self.subnets.items():
            for member in subnet.members:
                if member not in self.nodes:
                    raise RegistryFormatError(
                        f"subnets.{subnet_id}.members: {member!r} is not a node in 'nodes'"
                    )
                if member in owner:
                    raise RegistryFormatError(
                        f"node {member!r} is a member of two subnets: "
                        f"{owner[member]!r} and {subnet_id!r}"
                    )
                owner[member] = subnet_id
        for node_id in self.api_boundary_nodes:
            if node_id not in self.nodes:
                raise RegistryFormatError(f"api_boundary_nodes.{node_id}: not a node in 'nodes'")
            if node_id in owner:
                raise RegistryFormatError(
                    f"api_boundary_nodes.{node_id}: the node is a member of subnet "
                    f"{owner[node_id]!r}; API boundary nodes must be unassigned"
                )


def _mapping(value: Any, path: str, allowed: set[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RegistryFormatError(f"{path}: expected an object, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise RegistryFormatError(
                f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
    return value


def _id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise RegistryFormatError(f"{path}: ids must be non-empty strings, got {value!r}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise RegistryFormatError(f"{path}: expected a non-empty string, got {value!r}")
    return value


def _int(value: Any, path: str, minimum: int = 0, maximum: int | None = None) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise RegistryFormatError(f"{path}: expected an integer {bound}, got {value!r}")
    return value


def _subnet(raw: Any, path: str) -> SubnetRecord:
    record = _mapping(raw, path, {"subnet_type", "members", "replica_version"})
    type_name = record.get("subnet_type")
    try:
        subnet_type = SubnetType(str(type_name))
    except ValueError:
        raise RegistryFormatError(
            f"{path}.subnet_type: {type_name!r} is not one of "
            f"{', '.join(t.value for t in SubnetType)}"
        ) from None
    members = record.get("members")
    if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
        raise RegistryFormatError(f"{path}.members: expected a list of node ids, got {members!r}")
    if len(set(members)) != len(members):
        raise RegistryFormatError(f"{path}.members: a node is listed twice in {members!r}")
    return SubnetRecord(
        subnet_type, tuple(members), _str(record.get("replica_version"), f"{path}.replica_version")
    )


def _node(raw: Any, path: str) -> NodeRecord:
    record = _mapping(raw, path, {"ip", "http_port", "metrics_port", "domain", "features"})
    domain = record.get("domain")
    if domain is not None:
        domain = _str(domain, f"{path}.domain")
    features = record.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise RegistryFormatError(f"{path}.features: expected a list of names, got {features!r}")
    unknown = sorted(set(features) - KNOWN_FEATURES)
    if unknown:
        raise RegistryFormatError(
            f"{path}.features: unknown feature(s) {unknown}; known: {sorted(KNOWN_FEATURES)}"
        )
    return NodeRecord(
        ip=_str(record.get("ip"), f"{path}.ip"),
        http_port=_int(record.get("http_port", Port.REPLICA_HTTP), f"{path}.http_port", 1, 65535),
        metrics_port=_int(
            record.get("metrics_port", Port.REPLICA_METRICS), f"{path}.metrics_port", 1, 65535
        ),
        domain=domain,
        features=frozenset(features),
    )
