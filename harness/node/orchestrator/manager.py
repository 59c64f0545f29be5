"""Managers: when to start, restart and stop the node's programs.

`ProcessManager` owns one program (one `Process` type, one `ProcessRunner`) and is the one
place that logs starts and stops and counts them in the metrics. `MultipleProcessesManager`
owns the programs whose lifetime is tied to the node's subnet (replica, ic-gateway), and
`IcBoundaryManager` the API boundary node's ic-boundary.

Restarts follow the IC: when new arguments call for a restart, the running instance is only
stopped; the new one is started by a later call once the old one has exited (its exit wakes
the main loop, so "later" means milliseconds). A program that exits on its own is restarted on
the next pass, after an exponential backoff when it keeps dying quickly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from harness.node.orchestrator.errors import (
    DomainNameMissing,
    OrchestratorError,
    ProcessStartError,
    ProcessStopError,
)
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.process import A, C, Process, Restart
from harness.node.orchestrator.processes import IcBoundaryArgs, IcBoundaryConfig
from harness.node.orchestrator.runner import ProcessRunner
from harness.node.orchestrator.states import ALIVE_STATES, ProcessState, check_transition
from harness.node.registry import NodeRecord, SubnetType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Restart delays for a program that keeps dying quickly.

    An exit after less than `min_uptime` seconds (or a failed spawn) delays the restart by
    `initial`, doubling per quick exit up to `maximum`; once an instance stayed up for
    `min_uptime`, the delay resets and an exit restarts it on the next pass.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    min_uptime: float = 10.0

    def next_delay(self, previous: float) -> float:
        return self.initial if previous <= 0 else min(self.maximum, previous * self.factor)


DEFAULT_BACKOFF = Backoff()


class ProcessManager(Generic[C, A]):
    """Starts, restarts and stops one program; owns its state machine."""

    def __init__(
        self,
        process_type: type[Process[C, A]],
        config: C,
        runner: ProcessRunner,
        metrics: OrchestratorMetrics,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.process_type = process_type
        self.name = process_type.NAME
        self.config = config
        self.runner = runner
        self.metrics = metrics
        self.backoff = backoff
        self.clock = clock
        self._state = ProcessState.STOPPED
        self._process: Process[C, A] | None = None  # the instance last started
        self._started_at = 0.0
        self._delay = 0.0
        self._retry_at: float | None = None

    # ------------------------------------------------------------------ observation
    @property
    def state(self) -> ProcessState:
        self._sync()
        return self._state

    def is_running(self) -> bool:
        return self.state in ALIVE_STATES

    def pid(self) -> int | None:
        return self.runner.pid()

    @property
    def current(self) -> Process[C, A] | None:
        """The running (or stopping) instance, None when none runs."""
        return self._process if self.is_running() else None

    def next_wakeup(self) -> float | None:
        """When (on `clock`) a backed-off restart becomes due, None if none is pending."""
        return self._retry_at if self.state is ProcessState.BACKOFF else None

    # ------------------------------------------------------------------ actions
    async def ensure_running(self, args: A) -> None:
        """Make sure an instance fitting `args` runs (or will, once the old one exited)."""
        state = self.state
        if state is ProcessState.RUNNING:
            assert self._process is not None
            decision = self._process.restart_decision(args)
            if isinstance(decision, Restart):
                log.info("Restarting %s process: %s", self.name, decision.reason)
                self.stop()
            return
        if state is ProcessState.STOPPING:
            log.debug("%s is still stopping; starting it once it exited", self.name)
            return
        if state is ProcessState.BACKOFF and not self._backoff_over(args):
            return
        await self._start(args)

    def stop(self) -> None:
        """Stop the running instance (SIGTERM now, SIGKILL after the grace period); no-op
        when none runs. Returns at once: the instance counts as running until it exited."""
        state = self.state
        if state in (ProcessState.EXITED, ProcessState.BACKOFF):
            self._retry_at = None
            self._delay = 0.0
            self._set_gauge()
            self._set_state(ProcessState.STOPPED)
            return
        if state is not ProcessState.RUNNING:
            return
        log.info("Stopping %s process", self.name)
        self.metrics.processes_stop_attempts.labels(self.name).inc()
        try:
            self.runner.stop()
        except OSError as exc:
            raise ProcessStopError(
                f"Error when attempting to stop the {self.name} process: {exc}"
            ) from exc
        self._set_state(ProcessState.STOPPING)

    # ------------------------------------------------------------------ internals
    async def _start(self, args: A) -> None:
        process = self.process_type.build(self.config, args)
        log.info("Starting new %s process", self.name)
        self.metrics.processes_start_attempts.labels(self.name).inc()
        try:
            await self.runner.start(process.launch_spec())
        except OSError as exc:
            self._process = None
            self._enter_backoff(f"could not be started ({exc})")
            raise ProcessStartError(
                f"Error when attempting to start {self.name} process: {exc}"
            ) from exc
        self._process = process
        self._started_at = self.clock()
        self._retry_at = None
        self._set_state(ProcessState.RUNNING)

    def _backoff_over(self, args: A) -> bool:
        assert self._retry_at is not None
        if self._process is not None and isinstance(
            decision := self._process.restart_decision(args), Restart
        ):
            log.info("%s: not waiting for the backoff: %s", self.name, decision.reason)
            return True
        return self.clock() >= self._retry_at

    def _sync(self) -> None:
        """Fold what the runner saw (an exit) into the state machine."""
        if self._state not in ALIVE_STATES:
            return
        if self.runner.is_running():
            if (
                self._state is ProcessState.RUNNING
                and self._delay > 0
                and self.clock() - self._started_at >= self.backoff.min_uptime
            ):
                log.info("%s stayed up %.0f s: backoff reset", self.name, self.backoff.min_uptime)
                self._delay = 0.0
                self._set_gauge()
            return
        exit_record = self.runner.last_exit
        if self._state is ProcessState.STOPPING or (exit_record and exit_record.requested):
            self._set_state(ProcessState.STOPPED)  # STOPPING -> STOPPED: the exit we asked for
            return
        description = exit_record.describe() if exit_record else "unknown status"
        runtime = exit_record.runtime if exit_record else 0.0
        if runtime < self.backoff.min_uptime:
            self._enter_backoff(f"exited on its own after {runtime:.1f} s ({description})")
        else:
            # RUNNING -> EXITED: a crash after a healthy uptime is restarted right away.
            self._delay = 0.0
            self._set_gauge()
            log.warning(
                "%s exited on its own after %.1f s (%s): restarting it",
                self.name,
                runtime,
                description,
            )
            self._set_state(ProcessState.EXITED)

    def _enter_backoff(self, what: str) -> None:
        self._delay = self.backoff.next_delay(self._delay)
        self._retry_at = self.clock() + self._delay
        self._set_gauge()
        log.warning(
            "%s %s: restarting it in %.1f s (crash-loop backoff)", self.name, what, self._delay
        )
        self._set_state(ProcessState.BACKOFF)

    def _set_gauge(self) -> None:
        self.metrics.restart_backoff.labels(self.name).set(self._delay)

    def _set_state(self, new: ProcessState) -> None:
        check_transition(self.name, self._state, new)
        if new is not self._state:
            log.debug("%s: %s -> %s", self.name, self._state.value, new.value)
        self._state = new


# ---------------------------------------------------------------------- subnet processes
@dataclass(frozen=True)
class Assignment:
    """What the registry says about the node's subnet, as the subnet's processes need it."""

    version: str
    subnet_id: str
    subnet_type: SubnetType | None
    node: NodeRecord
    ic_gateway_enabled: bool


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


def replica_wanted(_: Assignment) -> bool:
    return True


def ic_gateway_wanted(assignment: Assignment) -> bool:
    """On cloud engines, and only while the launch gate is on: otherwise it is stopped."""
    return assignment.subnet_type is SubnetType.CLOUD_ENGINE and assignment.ic_gateway_enabled


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


__all__ = [
    "DEFAULT_BACKOFF",
    "Assignment",
    "Backoff",
    "IcBoundaryManager",
    "Member",
    "MultipleProcessesManager",
    "ProcessManager",
    "ic_gateway_wanted",
    "replica_wanted",
]
