"""The policy: which of the node's programs run when, and with which arguments, as in the IC,
derived from the programs' descriptions (`harness.node.catalog`: `Program.runs_on`).

The checks (`upgrade`, `boundary_node`) read the registry and hand what they found (an
`Assignment`) to the policy; the `ProcessManager`s carry it out.

Subnet programs (the upgrade check): the programs that run on subnet members. While the node is
a member of a subnet, each runs when its description admits the subnet's type and its launch
gate is open (ic-gateway: on cloud engines, while `--enable-ic-gateway` or the node feature
`ic_gateway` says so), with arguments from its `Process.args_for` (the replica: the subnet's
replica version, the node's IP and ports); it is stopped otherwise, also when it was running.

API boundary programs (the boundary-node check): the programs that run on API boundary nodes,
while the node has an API boundary node record; ic-boundary needs the node's domain as its TLS
hostname (`RunsOn.needs_domain`): without one it is stopped. A changed domain restarts it
through its `restart_decision`, the one mechanism of every restart.

Each set is started in order and stopped in reverse; a failure of one program does not keep the
others from being seen to. As everywhere in the orchestrator, a restart only stops the running
instance; a later pass starts the new one once the old one has exited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from harness.node.description import Program, Role
from harness.node.orchestrator.errors import OrchestratorError
from harness.node.orchestrator.manager import ProcessManager
from harness.node.orchestrator.process import A, Assignment, C
from harness.node.registry import RegistrySnapshot

log = logging.getLogger(__name__)


def open_gates(
    programs: Iterable[Program], snapshot: RegistrySnapshot, node_id: str, flags: frozenset[str]
) -> frozenset[str]:
    """The launch gates of `programs` open for the node: those the orchestrator's flags open
    (`--enable-ic-gateway`, as the IC's `IC_GATEWAY_LAUNCH_ENABLED`, off by default), and those
    the node's registry record has as a feature."""
    return frozenset(
        gate
        for program in programs
        if (gate := program.runs_on.gate) is not None
        and program.runs_on.gate_open(snapshot, node_id, flags)
    )


@dataclass(frozen=True)
class Member(Generic[C, A]):
    """A program of a set: when it is wanted, and its arguments."""

    program: Program
    manager: ProcessManager[C, A]

    def wanted(self, assignment: Assignment, role: Role) -> bool:
        """Whether it runs on a node of `role`, by its description (`RunsOn.admits`)."""
        return self.program.runs_on.admits(
            role, assignment.subnet_type, assignment.open_gates, bool(assignment.node.domain)
        )

    async def apply(self, assignment: Assignment, role: Role) -> None:
        """Run it with the arguments its `Process` makes of `assignment`, or stop it."""
        if self.wanted(assignment, role):
            await self.manager.ensure_running(self.manager.process_type.args_for(assignment))
        else:
            self.manager.stop()


class MultipleProcessesManager:
    """The programs of nodes of one role, started in order and stopped in reverse."""

    def __init__(self, role: Role, members: Sequence[Member[Any, Any]]) -> None:
        self.role = role
        self.members = list(members)

    @property
    def managers(self) -> list[ProcessManager[Any, Any]]:
        return [member.manager for member in self.members]

    async def start_all(self, assignment: Assignment) -> None:
        """Ensure every wanted program, stop the unwanted ones; carry on past a failure and
        raise the first error at the end."""
        errors: list[OrchestratorError] = []
        for member in self.members:
            try:
                await member.apply(assignment, self.role)
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


def programs_of(
    role: Role, managed: Iterable[tuple[Program, ProcessManager[Any, Any]]]
) -> MultipleProcessesManager:
    """The programs that run on nodes of `role` (`Program.runs_on.roles`), each with its
    manager, in start order."""
    return MultipleProcessesManager(
        role,
        [Member(program, manager) for program, manager in managed if role in program.runs_on.roles],
    )
