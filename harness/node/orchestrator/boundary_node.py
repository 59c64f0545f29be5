"""The API boundary node check: run ic-boundary while the node is an API boundary node.

Per pass: the node has an API boundary node record → the programs of API boundary nodes run
(`policy.programs_of`): ic-boundary with the node's domain as its TLS hostname (restarted when
the domain changes, by its `restart_decision`); the node's record has no domain → what needs one
is stopped and a warning logged (once, until a domain appears); the record is gone → stopped.
"""

from __future__ import annotations

import logging

from harness.node.catalog import supervised
from harness.node.orchestrator.errors import OrchestratorError
from harness.node.orchestrator.policy import MultipleProcessesManager, open_gates
from harness.node.orchestrator.process import Assignment
from harness.node.orchestrator.tasks import TaskTracker
from harness.node.registry import RegistrySnapshot

log = logging.getLogger(__name__)

TASK_NAME = "boundary_node_management"  # the IC's task name


class BoundaryNodeCheck:
    """Keeps ic-boundary in line with the node's API boundary node record."""

    def __init__(
        self,
        node_id: str,
        programs: MultipleProcessesManager,
        flag_gates: frozenset[str],
        tasks: TaskTracker,
    ) -> None:
        self.node_id = node_id
        self.programs = programs
        self.flag_gates = flag_gates
        self.tasks = tasks
        self._warned_missing_domain = False

    async def check(self, snapshot: RegistrySnapshot | None) -> None:
        """One check; raises `OrchestratorError` on failure."""
        if snapshot is None:
            return
        version = snapshot.api_boundary_node_version(self.node_id)
        if version is None:
            self.programs.stop_all()
            return
        node = snapshot.nodes[self.node_id]
        gates = open_gates(supervised(), snapshot, self.node_id, self.flag_gates)
        await self.programs.start_all(Assignment(version, None, None, node, gates))
        needing = [m.manager.name for m in self.programs.members if m.program.runs_on.needs_domain]
        if node.domain is None and needing:
            if not self._warned_missing_domain:
                self._warned_missing_domain = True
                names = ", ".join(needing)
                log.warning(
                    "There is no domain associated with the node, while this is a requirement "
                    "for the API boundary node (%s). Shutting %s down.",
                    names,
                    names,
                )
            return
        self._warned_missing_domain = False

    async def run(self, snapshot: RegistrySnapshot | None) -> None:
        """One pass: check, log a failure, never raise."""
        try:
            await self.check(snapshot)
        except OrchestratorError as exc:
            log.warning("Failed to ensure ic-boundary is running: %s", exc)
        except Exception as exc:
            log.error("Failed to ensure ic-boundary is running: %r", exc)
            self.tasks.record_failure(TASK_NAME, exc)
