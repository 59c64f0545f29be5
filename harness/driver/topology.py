"""Declaring a testnet in Python, shaped like the IC driver's `InternetComputer` builder.

    InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(4).with_ic_gateway())
        .with_unassigned_nodes(2)
        .with_api_boundary_nodes(1)

`InternetComputer.validate()` (called before anything starts) rejects what cannot work, with a
message that names the problem. `plan()` turns the declaration into concrete node and subnet ids.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from harness.driver.errors import TopologyError
from harness.node.catalog import PROGRAMS, supervised
from harness.node.registry import SubnetType

DEFAULT_REPLICA_VERSION = "1.0.0"
MAX_NODES = 1000  # the local backend's; docker and swarm hold 250 (a /24 network)
FEATURES = frozenset(gate for p in PROGRAMS if (gate := p.runs_on.gate) is not None)
"""The node features a subnet may turn on: the launch gates of the node programs."""
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)
PROCESS_NAMES = tuple(program.name for program in supervised())
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_MACHINE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}=[A-Za-z0-9._-]{1,63}$")


@dataclass
class Subnet:
    """A subnet of one type with a number of nodes."""

    subnet_type: SubnetType
    nodes: int = 0
    replica_version: str = DEFAULT_REPLICA_VERSION
    features: set[str] = field(default_factory=set)
    name: str | None = None

    def add_nodes(self, count: int) -> Self:
        if not isinstance(count, int) or count < 1:
            raise TopologyError(f"add_nodes: count must be a positive integer, got {count!r}")
        self.nodes += count
        return self

    def with_replica_version(self, version: str) -> Self:
        self.replica_version = version
        return self

    def with_ic_gateway(self, enabled: bool = True) -> Self:
        """Turn the ic-gateway launch gate on for every node of this subnet."""
        return self.with_feature("ic_gateway", enabled)

    def with_feature(self, feature: str, enabled: bool = True) -> Self:
        if feature not in FEATURES:
            raise TopologyError(f"unknown node feature {feature!r}; known: {sorted(FEATURES)}")
        (self.features.add if enabled else self.features.discard)(feature)
        return self

    def with_name(self, name: str) -> Self:
        self.name = name
        return self


@dataclass(frozen=True)
class PlannedNode:
    """A node of a planned topology; `subnet_id` is None for unassigned and API boundary nodes."""

    node_id: str
    index: int
    subnet_id: str | None
    features: frozenset[str]
    domain: str | None = None
    api_boundary: bool = False
    machine_label: str | None = None  # `KEY=VALUE`: run on a machine with that label (swarm)


@dataclass(frozen=True)
class PlannedSubnet:
    subnet_id: str
    subnet_type: SubnetType
    replica_version: str
    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Concrete ids for every subnet and node, in a stable order."""

    name: str
    subnets: tuple[PlannedSubnet, ...]
    nodes: tuple[PlannedNode, ...]
    unassigned_nodes_version: str
    prometheus: bool = False  # a Prometheus beside the testnet (`with_prometheus`)
    binaries: tuple[tuple[str, str], ...] = ()  # (program, executable): `with_binary`


@dataclass
class InternetComputer:
    """A testnet topology: subnets, unassigned nodes and API boundary nodes."""

    subnets: list[Subnet] = field(default_factory=list)
    unassigned_nodes: int = 0
    api_boundary_nodes: int = 0
    api_boundary_domains: list[str] = field(default_factory=list)
    name: str = "ic"
    unassigned_nodes_version: str = DEFAULT_REPLICA_VERSION
    machine_labels: dict[str, str] = field(default_factory=dict)
    prometheus: bool = False
    binaries: dict[str, str] = field(default_factory=dict)

    def add_subnet(self, subnet: Subnet) -> Self:
        if not isinstance(subnet, Subnet):
            raise TopologyError(f"add_subnet takes a Subnet, got {type(subnet).__name__}")
        self.subnets.append(subnet)
        return self

    def add_fast_single_node_subnet(self, subnet_type: SubnetType) -> Self:
        return self.add_subnet(Subnet(subnet_type).add_nodes(1))

    def with_unassigned_nodes(self, count: int) -> Self:
        if not isinstance(count, int) or count < 0:
            raise TopologyError(f"with_unassigned_nodes: count must be >= 0, got {count!r}")
        self.unassigned_nodes = count
        return self

    def with_api_boundary_nodes(self, count: int, domains: list[str] | None = None) -> Self:
        """Add API boundary nodes; their domains default to `api<i>.<name>.icp`."""
        if not isinstance(count, int) or count < 0:
            raise TopologyError(f"with_api_boundary_nodes: count must be >= 0, got {count!r}")
        self.api_boundary_nodes = count
        self.api_boundary_domains = list(domains or [])
        return self

    def with_machine_label(self, target: str, label: str) -> Self:
        """Run a node, or every node of a subnet (`target`: a node id such as
        `subnet-0-node-1`, or a subnet id), on machines with the label `KEY=VALUE`. Only the
        swarm backend has several machines (`docker node update --label-add KEY=VALUE`); the
        local and docker backends run everything on one and ignore it."""
        self.machine_labels[target] = label
        return self

    def with_name(self, name: str) -> Self:
        self.name = name
        return self

    def with_prometheus(self, enabled: bool = True) -> Self:
        """Run a Prometheus beside the testnet that scrapes every metrics endpoint of every
        node (`harness.driver.prometheus`; its URL is `Testnet.prometheus`), on any backend
        that has the `PrometheusBeside` capability (local, docker and swarm do)."""
        self.prometheus = enabled
        return self

    def with_binary(self, program: str, path: str | os.PathLike[str]) -> Self:
        """Run `program` (one the orchestrator runs: `replica`, `ic-gateway`, `ic-boundary`,
        or one of yours) from the executable at `path` instead of the harness's own, on every
        node: the real `ic-gateway` binary, say, or your own replica build. It is exec'd, never
        forked, with the arguments and environment the orchestrator makes for the program from
        the registry (ic-gateway's are those of the IC's ic-gateway.env: LISTEN_PLAIN, IC_URL,
        DOMAIN, METRICS_LISTEN), and supervised, checked and reported as the harness's own.
        On docker and swarm it is mounted, read-only, at the same path into every node, so it
        must run on the node image's Debian."""
        self.binaries[program] = str(Path(path).absolute())
        return self

    def node_count(self) -> int:
        return sum(s.nodes for s in self.subnets) + self.unassigned_nodes + self.api_boundary_nodes

    def validate(self) -> None:
        """Raise `TopologyError` naming the first problem that would make the testnet fail."""
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise TopologyError(
                f"testnet name {self.name!r}: use lower-case letters, digits and '-' (max 41)"
            )
        for index, subnet in enumerate(self.subnets):
            if not isinstance(subnet.subnet_type, SubnetType):
                raise TopologyError(
                    f"subnet {index}: subnet type must be a SubnetType, got {subnet.subnet_type!r}"
                )
        # Counted before anything is built per node, so a huge count fails at once.
        if self.node_count() == 0:
            raise TopologyError("the topology has no nodes: add a subnet with add_nodes(n)")
        if self.node_count() > MAX_NODES:
            raise TopologyError(
                f"the topology has {self.node_count()} nodes; one testnet holds at most {MAX_NODES}"
            )
        names: set[str] = set()
        for index, subnet in enumerate(self.subnets):
            label = subnet.name or f"subnet {index} ({subnet.subnet_type.value})"
            if subnet.nodes < 1:
                raise TopologyError(f"{label} has no nodes: call add_nodes(n) with n >= 1")
            if subnet.name is not None:
                if not isinstance(subnet.name, str) or not _NAME.fullmatch(subnet.name):
                    raise TopologyError(f"subnet name {subnet.name!r}: use [a-z0-9-], max 41")
                if subnet.name in names:
                    raise TopologyError(f"two subnets are named {subnet.name!r}")
                names.add(subnet.name)
            if not subnet.replica_version:
                raise TopologyError(f"{label}: replica version is empty")
        for program, path in self.binaries.items():
            if program not in PROCESS_NAMES:
                raise TopologyError(
                    f"with_binary: {program!r} is no program the orchestrator runs; programs: "
                    f"{', '.join(PROCESS_NAMES)}"
                )
            if not Path(path).is_file() or not os.access(path, os.X_OK):
                raise TopologyError(f"with_binary({program!r}): {path} is no executable file")
        if self.api_boundary_domains and len(self.api_boundary_domains) != self.api_boundary_nodes:
            raise TopologyError(
                f"{self.api_boundary_nodes} API boundary node(s) but "
                f"{len(self.api_boundary_domains)} domain(s) given"
            )
        for domain in self.api_boundary_domains:
            if not isinstance(domain, str):
                raise TopologyError(f"API boundary node domain {domain!r} is not a string")
        seen: set[str] = set()
        for domain in self.boundary_domains():
            if not _DOMAIN.fullmatch(domain):
                raise TopologyError(f"API boundary node domain {domain!r} is not a valid FQDN")
            if domain in seen:
                raise TopologyError(f"two API boundary nodes share the domain {domain!r}")
            seen.add(domain)

    def _validate_machine_labels(self, nodes: list[PlannedNode], subnet_ids: set[str]) -> None:
        node_ids = {node.node_id for node in nodes}
        for target, label in self.machine_labels.items():
            if target not in node_ids and target not in subnet_ids:
                raise TopologyError(
                    f"machine label for {target!r}: no such node or subnet; nodes: "
                    f"{sorted(node_ids)}, subnets: {sorted(subnet_ids)}"
                )
            if not isinstance(label, str) or not _MACHINE_LABEL.fullmatch(label):
                raise TopologyError(
                    f"machine label {label!r} for {target!r}: expected KEY=VALUE "
                    "(letters, digits, '.', '_', '-')"
                )

    def boundary_domains(self) -> list[str]:
        if self.api_boundary_domains:
            return [d.lower().rstrip(".") for d in self.api_boundary_domains]
        return [f"api{i}.{self.name}.icp" for i in range(self.api_boundary_nodes)]

    def plan(self) -> Plan:
        """Validate and give every subnet and node a concrete id."""
        self.validate()
        subnets: list[PlannedSubnet] = []
        nodes: list[PlannedNode] = []
        for s_index, subnet in enumerate(self.subnets):
            subnet_id = subnet.name or f"subnet-{s_index}"
            ids = tuple(f"{subnet_id}-node-{i}" for i in range(subnet.nodes))
            subnets.append(
                PlannedSubnet(subnet_id, subnet.subnet_type, subnet.replica_version, ids)
            )
            for node_id in ids:
                nodes.append(
                    PlannedNode(node_id, len(nodes), subnet_id, frozenset(subnet.features))
                )
        for i in range(self.unassigned_nodes):
            nodes.append(PlannedNode(f"unassigned-node-{i}", len(nodes), None, frozenset()))
        for i, domain in enumerate(self.boundary_domains()):
            nodes.append(
                PlannedNode(
                    f"api-bn-{i}", len(nodes), None, frozenset(), domain=domain, api_boundary=True
                )
            )
        self._validate_machine_labels(nodes, {s.subnet_id for s in subnets})
        labelled = [
            dataclasses.replace(
                node,
                machine_label=self.machine_labels.get(node.node_id)
                or self.machine_labels.get(node.subnet_id or ""),
            )
            for node in nodes
        ]
        return Plan(
            self.name,
            tuple(subnets),
            tuple(labelled),
            self.unassigned_nodes_version,
            prometheus=self.prometheus,
            binaries=tuple(sorted(self.binaries.items())),
        )


# A topology as a JSON document: kept in a running testnet's record, so that another process
# can attach to it (`harness.driver.attach`) and tell whether it is the testnet a test declares.
def topology_document(topology: InternetComputer) -> dict[str, Any]:
    """`topology` as a JSON-ready document (`topology_from_document` reads it back)."""
    return {
        "name": topology.name,
        "subnets": [
            {
                "type": subnet.subnet_type.value,
                "nodes": subnet.nodes,
                "replica_version": subnet.replica_version,
                "features": sorted(subnet.features),
                "name": subnet.name,
            }
            for subnet in topology.subnets
        ],
        "unassigned_nodes": topology.unassigned_nodes,
        "unassigned_nodes_version": topology.unassigned_nodes_version,
        "api_boundary_nodes": topology.api_boundary_nodes,
        "api_boundary_domains": list(topology.api_boundary_domains),
        "machine_labels": dict(topology.machine_labels),
        "prometheus": topology.prometheus,
        "binaries": dict(topology.binaries),
    }


def topology_from_document(document: Mapping[str, Any]) -> InternetComputer:
    """The topology of a `topology_document`; `TopologyError` naming what is wrong with it."""
    try:
        subnets = [
            Subnet(
                SubnetType(subnet["type"]),
                int(subnet["nodes"]),
                str(subnet["replica_version"]),
                set(subnet["features"]),
                subnet["name"],
            )
            for subnet in document["subnets"]
        ]
        topology = InternetComputer(
            subnets=subnets,
            unassigned_nodes=int(document["unassigned_nodes"]),
            api_boundary_nodes=int(document["api_boundary_nodes"]),
            api_boundary_domains=list(document["api_boundary_domains"]),
            name=str(document["name"]),
            unassigned_nodes_version=str(document["unassigned_nodes_version"]),
            machine_labels=dict(document["machine_labels"]),
            prometheus=bool(document["prometheus"]),
            binaries=dict(document.get("binaries", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TopologyError(f"not a topology document ({type(exc).__name__}: {exc})") from None
    topology.validate()
    return topology


def topology_differences(wanted: InternetComputer, running: InternetComputer) -> list[str]:
    """How the topology `running` differs from `wanted`, one line per difference (none: they
    are the same testnet): subnets, node counts, versions, launch gates, unassigned and API
    boundary nodes, machine labels, programs' binaries, Prometheus. The testnet's name is not
    compared."""
    differences = []

    def compare(what: str, want: object, have: object) -> None:
        if want != have:
            differences.append(f"{what}: the test declares {want}, the testnet has {have}")

    compare("subnets", len(wanted.subnets), len(running.subnets))
    for index, (want, have) in enumerate(zip(wanted.subnets, running.subnets, strict=False)):
        label = f"subnet {index} ({want.name or want.subnet_type.value})"
        compare(f"{label} type", want.subnet_type.value, have.subnet_type.value)
        compare(f"{label} nodes", want.nodes, have.nodes)
        compare(f"{label} replica version", want.replica_version, have.replica_version)
        compare(f"{label} launch gates", sorted(want.features), sorted(have.features))
        compare(f"{label} name", want.name, have.name)
    compare("unassigned nodes", wanted.unassigned_nodes, running.unassigned_nodes)
    compare(
        "unassigned nodes' version",
        wanted.unassigned_nodes_version,
        running.unassigned_nodes_version,
    )
    compare("API boundary nodes", wanted.api_boundary_nodes, running.api_boundary_nodes)
    if wanted.api_boundary_nodes == running.api_boundary_nodes:
        compare("API boundary domains", wanted.boundary_domains(), running.boundary_domains())
    compare("machine labels", wanted.machine_labels, running.machine_labels)
    compare("programs' binaries", wanted.binaries, running.binaries)
    compare(
        "Prometheus",
        "one" if wanted.prometheus else "none",
        "one" if running.prometheus else "none",
    )
    return differences
