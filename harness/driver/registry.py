"""The testnet's registry, written by the driver: the initial version (like ic-prep) and the
mutations tests make (each one a new immutable version in the store the nodes read)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from harness.driver.errors import HarnessError
from harness.driver.topology import Plan
from harness.node.registry import (
    ApiBoundaryNodeRecord,
    LocalStore,
    NodeRecord,
    RegistrySnapshot,
    SubnetRecord,
)


def initial_snapshot(plan: Plan, node_ips: Mapping[str, str]) -> RegistrySnapshot:
    """Version 1 of a testnet's registry, from its plan and the nodes' addresses."""
    return RegistrySnapshot(
        version=1,
        subnets={
            s.subnet_id: SubnetRecord(s.subnet_type, s.node_ids, s.replica_version)
            for s in plan.subnets
        },
        nodes={
            n.node_id: NodeRecord(ip=node_ips[n.node_id], domain=n.domain, features=n.features)
            for n in plan.nodes
        },
        api_boundary_nodes={
            n.node_id: ApiBoundaryNodeRecord(plan.unassigned_nodes_version)
            for n in plan.nodes
            if n.api_boundary
        },
        unassigned_nodes_version=plan.unassigned_nodes_version,
    )


class RegistryWriter:
    """Writes new registry versions; every method returns the version it wrote."""

    def __init__(self, path: Path, on_change: Callable[[int, str], None] | None = None) -> None:
        """`on_change(version, what)` is called after each new version is written."""
        self.store = LocalStore(path)
        self._lock = threading.Lock()
        self._on_change = on_change

    @property
    def path(self) -> Path:
        return self.store.path

    def latest(self) -> RegistrySnapshot:
        snapshot = self.store.read_latest()
        if snapshot is None:
            raise HarnessError(f"registry {self.store.path} has no version yet")
        return snapshot

    def write_initial(self, snapshot: RegistrySnapshot) -> int:
        self.store.write(snapshot)
        if self._on_change is not None:
            self._on_change(snapshot.version, "the initial topology")
        return snapshot.version

    def mutate(self, change: Callable[[RegistrySnapshot], RegistrySnapshot], what: str = "") -> int:
        """Apply `change` (described by `what`) to the latest version and write the result as
        the next version."""
        with self._lock:
            current = self.latest()
            updated = dataclasses.replace(change(current), version=current.version + 1)
            self.store.write(updated)
        if self._on_change is not None:
            self._on_change(updated.version, what)
        return updated.version

    def restore(self, version: int, what: str) -> tuple[int, bool]:
        """Make the content of `version` the latest again, written as a new version (versions
        only grow) unless the latest has that content already; return the latest version and
        whether it was written."""
        with self._lock:
            current = self.latest()
            content = dataclasses.replace(self.store.read(version), version=current.version)
            if content == current:
                return current.version, False
            updated = dataclasses.replace(content, version=current.version + 1)
            self.store.write(updated)
        if self._on_change is not None:
            self._on_change(updated.version, what)
        return updated.version, True

    # The mutations tests use.
    def assign_node(self, node_id: str, subnet_id: str) -> int:
        """Move a node into `subnet_id` (out of any subnet it was in)."""

        def change(s: RegistrySnapshot) -> RegistrySnapshot:
            _require_node(s, node_id)
            if subnet_id not in s.subnets:
                raise HarnessError(f"no subnet {subnet_id!r}; subnets: {sorted(s.subnets)}")
            if node_id in s.api_boundary_nodes:
                raise HarnessError(f"{node_id} is an API boundary node; remove that record first")
            subnets = _without_member(s, node_id)
            target = subnets[subnet_id]
            subnets[subnet_id] = dataclasses.replace(target, members=(*target.members, node_id))
            return dataclasses.replace(s, subnets=subnets)

        return self.mutate(change, f"{node_id} assigned to subnet {subnet_id}")

    def unassign_node(self, node_id: str) -> int:
        def change(s: RegistrySnapshot) -> RegistrySnapshot:
            _require_node(s, node_id)
            if s.subnet_of(node_id) is None:
                raise HarnessError(f"{node_id} is not assigned to a subnet")
            return dataclasses.replace(s, subnets=_without_member(s, node_id))

        return self.mutate(change, f"{node_id} unassigned")

    def set_replica_version(self, subnet_id: str, version: str) -> int:
        def change(s: RegistrySnapshot) -> RegistrySnapshot:
            if subnet_id not in s.subnets:
                raise HarnessError(f"no subnet {subnet_id!r}; subnets: {sorted(s.subnets)}")
            subnets = dict(s.subnets)
            subnets[subnet_id] = dataclasses.replace(subnets[subnet_id], replica_version=version)
            return dataclasses.replace(s, subnets=subnets)

        return self.mutate(change, f"subnet {subnet_id} replica version {version}")

    def set_domain(self, node_id: str, domain: str | None) -> int:
        what = f"domain of {node_id}: {domain}"
        return self._update_node(node_id, lambda n: dataclasses.replace(n, domain=domain), what)

    def set_feature(self, node_id: str, feature: str, enabled: bool) -> int:
        def update(n: NodeRecord) -> NodeRecord:
            features = n.features | {feature} if enabled else n.features - {feature}
            return dataclasses.replace(n, features=frozenset(features))

        state = "on" if enabled else "off"
        return self._update_node(node_id, update, f"feature {feature} of {node_id} {state}")

    def add_api_boundary_node(self, node_id: str, version: str | None = None) -> int:
        def change(s: RegistrySnapshot) -> RegistrySnapshot:
            _require_node(s, node_id)
            records = dict(s.api_boundary_nodes)
            records[node_id] = ApiBoundaryNodeRecord(version or s.unassigned_nodes_version)
            return dataclasses.replace(s, api_boundary_nodes=records)

        return self.mutate(change, f"{node_id} made an API boundary node")

    def remove_api_boundary_node(self, node_id: str) -> int:
        def change(s: RegistrySnapshot) -> RegistrySnapshot:
            if node_id not in s.api_boundary_nodes:
                raise HarnessError(f"{node_id} has no API boundary node record")
            records = {k: v for k, v in s.api_boundary_nodes.items() if k != node_id}
            return dataclasses.replace(s, api_boundary_nodes=records)

        return self.mutate(change, f"{node_id} no longer an API boundary node")

    def _update_node(
        self, node_id: str, update: Callable[[NodeRecord], NodeRecord], what: str
    ) -> int:
        def change(s: RegistrySnapshot) -> RegistrySnapshot:
            _require_node(s, node_id)
            nodes = dict(s.nodes)
            nodes[node_id] = update(nodes[node_id])
            return dataclasses.replace(s, nodes=nodes)

        return self.mutate(change, what)


def _require_node(s: RegistrySnapshot, node_id: str) -> None:
    if node_id not in s.nodes:
        raise HarnessError(f"no node {node_id!r} in the registry")


def _without_member(s: RegistrySnapshot, node_id: str) -> dict[str, SubnetRecord]:
    return {
        sid: dataclasses.replace(sub, members=tuple(m for m in sub.members if m != node_id))
        for sid, sub in s.subnets.items()
    }
