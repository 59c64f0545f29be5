"""The policy: which of the node's programs run when, and with which arguments, as in the IC.

The checks (`upgrade`, `boundary_node`) read the registry and hand what they found to the
policy; the `ProcessManager`s carry it out. Every rule of the kind "X runs while Y" is here.

Subnet programs (the upgrade check): while the node is a member of a subnet, the replica runs
at the subnet's replica version with the node's IP and ports; beside it ic-gateway runs only on
cloud-engine subnets and only while the launch gate is on (`--enable-ic-gateway`, or the node
feature `ic_gateway` in the registry), and is stopped otherwise, also when it was running. They
are started in order and stopped in reverse; a failure of one does not keep the others from
being seen to.

ic-boundary (the boundary-node check): runs while the node is an API boundary node, with the
node's domain as its TLS hostname; a changed domain restarts it, no domain stops it
(`DomainNameMissing`).

As everywhere in the orchestrator, a restart only stops the running instance; a later pass
starts the new one once the old one has exited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from harness.node.orchestrator.errors import DomainNameMissing, OrchestratorError
from harness.node.orchestrator.manager import ProcessManager, manager_of
from harness.node.orchestrator.process import A, C
from harness.node.orchestrator.processes import (
    IcBoundaryArgs,
    IcBoundaryConfig,
    IcBoundaryProcess,
    IcGatewayArgs,
    IcGatewayProcess,
    ReplicaArgs,
    ReplicaProcess,
)
from harness.node.orchestrator.states import ProcessState
from harness.node.registry import NodeRecord, RegistrySnapshot, SubnetType
from harness.node.registry.records import FEATURE_IC_GATEWAY

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- subnet programs
@dataclass(frozen=True)
class Assignment:
    """What the registry says about the node's subnet, as the subnet's programs need it."""

    version: str
    subnet_id: str
    subnet_type: SubnetType | None
    node: NodeRecord
    ic_gateway_enabled: bool


def ic_gateway_gate(enable_flag: bool, snapshot: RegistrySnapshot, node_id: str) -> bool:
    """The ic-gateway launch gate: the flag (off by default, as the IC's
    `IC_GATEWAY_LAUNCH_ENABLED`) or the node's registry feature `ic_gateway`."""
    return enable_flag or snapshot.node_has_feature(node_id, FEATURE_IC_GATEWAY)


def replica_wanted(_: Assignment) -> bool:
    return True


def replica_args(assignment: Assignment) -> ReplicaArgs:
    node = assignment.node
    return ReplicaArgs(
        assignment.version, assignment.subnet_id, node.ip, node.http_port, node.metrics_port
    )


def ic_gateway_wanted(assignment: Assignment) -> bool:
    """On cloud engines, and only while the launch gate is on: otherwise it is stopped."""
    return assignment.subnet_type is SubnetType.CLOUD_ENGINE and assignment.ic_gateway_enabled


def ic_gateway_args(assignment: Assignment) -> IcGatewayArgs:
    node = assignment.node
    return IcGatewayArgs(assignment.version, node.ip, node.http_port, node.domain)


@dataclass(frozen=True)
class Member(Generic[C, A]):
    """A program of the subnet set: when it is wanted, and its arguments."""

    manager: ProcessManager[C, A]
    wanted: Callable[[Assignment], bool]
    args: Callable[[Assignment], A]

    async def apply(self, assignment: Assignment) -> None:
        if self.wanted(assignment):
            await self.manager.ensure_running(self.args(assignment))
        else:
            self.manager.stop()


class MultipleProcessesManager:
    """The programs tied to the node's subnet, started in order and stopped in reverse."""

    def __init__(self, members: Sequence[Member[Any, Any]]) -> None:
        self.members = list(members)

    @property
    def managers(self) -> list[ProcessManager[Any, Any]]:
        return [member.manager for member in self.members]

    async def start_all(
        self,
        version: str,
        subnet_id: str,
        subnet_type: SubnetType | None,
        gateway_enabled: bool,
        node: NodeRecord,
    ) -> None:
        """Ensure every wanted program, stop the unwanted ones; carry on past a failure and
        raise the first error at the end."""
        assignment = Assignment(version, subnet_id, subnet_type, node, gateway_enabled)
        errors: list[OrchestratorError] = []
        for member in self.members:
            try:
                await member.apply(assignment)
            except OrchestratorError as exc:
                log.warning("%s", exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    def stop_all(self) -> None:
        """Stop every program in reverse order of startup; raise the first error at the end."""
        errors: list[OrchestratorError] = []
        for manager in reversed(self.managers):
            try:
                manager.stop()
            except OrchestratorError as exc:
                log.warning("%s", exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    def next_wakeup(self) -> float | None:
        due = [t for m in self.managers if (t := m.next_wakeup()) is not None]
        return min(due, default=None)


def subnet_programs(managers: Iterable[ProcessManager[Any, Any]]) -> MultipleProcessesManager:
    """The programs tied to the node's subnet, in start order: a new one is a line here."""
    managers = list(managers)
    return MultipleProcessesManager(
        [
            Member(manager_of(managers, ReplicaProcess), replica_wanted, replica_args),
            Member(manager_of(managers, IcGatewayProcess), ic_gateway_wanted, ic_gateway_args),
        ]
    )


# ---------------------------------------------------------------------- ic-boundary
class IcBoundaryManager:
    """ic-boundary on API boundary nodes, restarted when the node's domain changes."""

    def __init__(self, manager: ProcessManager[IcBoundaryConfig, IcBoundaryArgs]) -> None:
        self.manager = manager
        self.current_domain: str | None = None

    async def ensure_running_and_restarted_on_domain_change(
        self, version: str, domain: str | None, ip: str
    ) -> None:
        if domain is None:
            self.manager.stop()
            self.current_domain = None
            raise DomainNameMissing(
                "There is no domain associated with the node, while this is a requirement "
                "for the API boundary node. Shutting ic-boundary down."
            )
        if domain != self.current_domain:
            # Not running: no-op. Running with the old domain: stop; a later call starts it.
            self.manager.stop()
        await self.manager.ensure_running(IcBoundaryArgs(version, domain, ip))
        running = self.manager.current
        if (
            running is not None
            and self.manager.state is ProcessState.RUNNING
            and running.args.domain == domain
        ):
            self.current_domain = domain

    def stop(self) -> None:
        self.manager.stop()


def ic_boundary_program(managers: Iterable[ProcessManager[Any, Any]]) -> IcBoundaryManager:
    return IcBoundaryManager(manager_of(managers, IcBoundaryProcess))
