"""The upgrade check: run the subnet's programs at the subnet's version, or none at all.

Per pass, on the latest good registry snapshot: a node that is a subnet member runs the replica
at the subnet's replica version (a changed version restarts it: our "upgrade"; a changed subnet
too) and, on cloud engines with the launch gate on, ic-gateway beside it; an unassigned node runs
neither. Before the first snapshot nothing is done.

Which program runs when is `policy`'s: this check finds the node's subnet and the launch gates
open for it in the snapshot and hands them over (an `Assignment`). A gate is open when the
orchestrator's flags open it (`--enable-ic-gateway`) OR when the node's registry record has it
as a feature (`ic_gateway`); a testnet can so turn it on and off per node at run time by
writing a new registry version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harness.node.catalog import supervised
from harness.node.orchestrator.errors import OrchestratorError
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.policy import MultipleProcessesManager, open_gates
from harness.node.orchestrator.process import Assignment
from harness.node.orchestrator.tasks import TaskTracker
from harness.node.registry import RegistrySnapshot

log = logging.getLogger(__name__)

TASK_NAME = "GuestOS_upgrade"  # the IC's task name, used as the task_name label


@dataclass(frozen=True)
class SubnetAssignment:
    """The IC's `SubnetAssignment`: Unknown until the first check, then (un)assigned."""

    known: bool = False
    subnet_id: str | None = None

    def describe(self) -> str:
        if not self.known:
            return "Subnet not known yet"
        return self.subnet_id or "Unassigned"


UNKNOWN = SubnetAssignment()
UNASSIGNED = SubnetAssignment(known=True)


class UpgradeCheck:
    """Decides, per pass, which of the subnet's programs run and at which version."""

    def __init__(
        self,
        node_id: str,
        processes: MultipleProcessesManager,
        flag_gates: frozenset[str],
        metrics: OrchestratorMetrics,
        tasks: TaskTracker,
    ) -> None:
        self.node_id = node_id
        self.processes = processes
        self.flag_gates = flag_gates
        self.metrics = metrics
        self.tasks = tasks
        self.assignment = UNKNOWN
        self.open_gates = flag_gates

    async def check(self, snapshot: RegistrySnapshot | None) -> SubnetAssignment:
        """One check; raises `OrchestratorError` when a program could not be started/stopped."""
        if snapshot is None:
            return self.assignment
        self.open_gates = open_gates(supervised(), snapshot, self.node_id, self.flag_gates)
        subnet_id = snapshot.subnet_of(self.node_id)
        if subnet_id is None:
            if self.assignment != UNASSIGNED:
                log.info(
                    "node %s is unassigned at registry version %d", self.node_id, snapshot.version
                )
            self.assignment = UNASSIGNED
            self.processes.stop_all()
            return self.assignment
        if self.assignment.subnet_id != subnet_id:
            log.info(
                "node %s is assigned to subnet %s at registry version %d",
                self.node_id,
                subnet_id,
                snapshot.version,
            )
        self.assignment = SubnetAssignment(known=True, subnet_id=subnet_id)
        subnet = snapshot.subnets[subnet_id]
        await self.processes.start_all(
            Assignment(
                subnet.replica_version,
                subnet_id,
                subnet.subnet_type,
                snapshot.nodes[self.node_id],
                self.open_gates,
            )
        )
        return self.assignment

    async def run(self, snapshot: RegistrySnapshot | None) -> None:
        """One pass of the upgrade loop: check, log and count a failure, never raise."""
        try:
            await self.check(snapshot)
        except OrchestratorError as exc:
            log.warning("Check for upgrade failed: %s", exc)
            self.metrics.failed_consecutive_upgrade_checks.inc()
        except Exception as exc:
            # A bug, not an expected failure: in the IC this would panic the task.
            log.error("Check for upgrade failed: %r", exc)
            self.metrics.failed_consecutive_upgrade_checks.inc()
            self.tasks.record_failure(TASK_NAME, exc)
        else:
            self.metrics.failed_consecutive_upgrade_checks.reset()
