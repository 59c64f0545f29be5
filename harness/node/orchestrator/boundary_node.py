"""The API boundary node check: run ic-boundary while the node is an API boundary node.

Per pass: the node has an API boundary node record → ic-boundary runs with the node's domain as
its TLS hostname (restarted when the domain changes: `policy.IcBoundaryManager`); the record has
no domain → ic-boundary is stopped and a warning logged (once, until a domain appears); the
record is gone → stopped.
"""

from __future__ import annotations

import logging

from harness.node.orchestrator.errors import DomainNameMissing, OrchestratorError
from harness.node.orchestrator.policy import IcBoundaryManager
from harness.node.orchestrator.tasks import TaskTracker
from harness.node.registry import RegistrySnapshot

log = logging.getLogger(__name__)

TASK_NAME = "boundary_node_management"  # the IC's task name


class BoundaryNodeCheck:
    """Keeps ic-boundary in line with the node's API boundary node record."""

    def __init__(self, node_id: str, manager: IcBoundaryManager, tasks: TaskTracker) -> None:
        self.node_id = node_id
        self.manager = manager
        self.tasks = tasks
        self._warned_missing_domain = False

    async def check(self, snapshot: RegistrySnapshot | None) -> None:
        """One check; raises `OrchestratorError` on failure."""
        if snapshot is None:
            return
        version = snapshot.api_boundary_node_version(self.node_id)
        if version is None:
            self.manager.stop()
            return
        node = snapshot.nodes[self.node_id]
        try:
            await self.manager.ensure_running_and_restarted_on_domain_change(
                version, node.domain, node.ip
            )
        except DomainNameMissing as exc:
            if not self._warned_missing_domain:
                self._warned_missing_domain = True
                log.warning("%s", exc)
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
