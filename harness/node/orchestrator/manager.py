"""The generic process manager: one program's state machine, its starts, stops and backoff.

`ProcessManager` owns one program (one `Process` type, one `ProcessRunner`) and is the one
place that logs starts and stops and counts them in the metrics. When a program should run,
and with which arguments, is not its business but `policy`'s.

The state changes only in `transition()` and in the actions (`ensure_running`, `stop`), as in
supervisor's `Subprocess.transition()`: `transition()` folds what the runner saw since the last
call (an exit; an uptime long enough to forget the backoff) into the state machine. The
orchestrator's pass calls it (a child's exit wakes the loop for that pass), and the actions call
it first. Everything else (`state`, `is_running()`, `current`, `next_wakeup()`, `pid()`) only
reads, so the dashboard and the metrics never move a program from one state to another.

Restarts follow the IC: when new arguments call for a restart, the running instance is only
stopped; the new one is started by a later call once the old one has exited (its exit wakes
the main loop, so "later" means milliseconds). A program that exits on its own is restarted on
the next pass, after an exponential backoff when it keeps dying quickly. `forget_backoff()` (the
harness's `POST /reset`, from the orchestrator's pass) puts a manager back where a fresh one
starts: no delay, no retry pending; a program in BACKOFF is started by the next
`ensure_running`, a running one is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic

from harness.node.description import DEFAULT_BACKOFF, Backoff
from harness.node.orchestrator.errors import ProcessStartError, ProcessStopError
from harness.node.orchestrator.events import EventJournal
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.process import A, C, Process, Restart
from harness.node.orchestrator.runner import ProcessRunner
from harness.node.orchestrator.states import ALIVE_STATES, ProcessState, check_transition

log = logging.getLogger(__name__)


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
        journal: EventJournal | None = None,
    ) -> None:
        self.process_type = process_type
        self.name = process_type.NAME
        self.config = config
        self.runner = runner
        self.metrics = metrics
        self.backoff = backoff
        self.clock = clock
        self.journal = journal
        self._state = ProcessState.STOPPED
        self._process: Process[C, A] | None = None  # the instance last started
        self._started_at = 0.0
        self._delay = 0.0
        self._retry_at: float | None = None

    # ------------------------------------------------------------------ reads (never change state)
    @property
    def state(self) -> ProcessState:
        """The state as of the last `transition()` or action."""
        return self._state

    def is_running(self) -> bool:
        """An instance exists (running or stopping), as of the last `transition()`."""
        return self._state in ALIVE_STATES

    def pid(self) -> int | None:
        return self.runner.pid()

    @property
    def current(self) -> Process[C, A] | None:
        """The running (or stopping) instance, None when none runs."""
        return self._process if self.is_running() else None

    def next_wakeup(self) -> float | None:
        """When (on `clock`) a backed-off restart becomes due, None if none is pending."""
        return self._retry_at if self._state is ProcessState.BACKOFF else None

    # ------------------------------------------------------------------ transitions
    def transition(self) -> None:
        """Fold what the runner saw since the last call into the state machine: an exit moves
        RUNNING or STOPPING on, an instance that stayed up long enough forgets its backoff.
        A no-op when nothing happened; safe to call any number of times."""
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
        requested = self._state is ProcessState.STOPPING or bool(
            exit_record and exit_record.requested
        )
        description = exit_record.describe() if exit_record else "unknown status"
        runtime = exit_record.runtime if exit_record else 0.0
        self._record("exit", status=description, runtime=round(runtime, 3), requested=requested)
        if requested:
            # STOPPING -> STOPPED (or RUNNING -> STOPPED): the exit we asked for.
            self._set_state(ProcessState.STOPPED)
            return
        if runtime < self.backoff.min_uptime:
            # RUNNING -> BACKOFF: it keeps dying quickly; restarting it at once would spin.
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

    def forget_backoff(self) -> float:
        """Forget the crash-loop backoff, as a fresh orchestrator has none: the delay is 0 (the
        next quick exit backs off by `Backoff.initial` again), no retry is pending (a program in
        BACKOFF is started by the next `ensure_running`, at once), the gauge reads 0. The state
        and a running instance are left alone. Returns the delay forgotten (0.0: there was
        none)."""
        forgotten = self._delay
        self._delay = 0.0
        self._retry_at = None
        self._set_gauge()
        if forgotten > 0 or self._state is ProcessState.BACKOFF:
            log.debug("%s: backoff of %.1f s forgotten", self.name, forgotten)
        return forgotten

    # ------------------------------------------------------------------ actions
    async def ensure_running(self, args: A) -> None:
        """Make sure an instance fitting `args` runs (or will, once the old one exited)."""
        self.transition()
        state = self._state
        if state is ProcessState.RUNNING:
            assert self._process is not None
            decision = self._process.restart_decision(args)
            if isinstance(decision, Restart):
                # RUNNING -> STOPPING only: a later call starts the new one once it exited.
                log.info("Restarting %s process: %s", self.name, decision.reason)
                self._record("restart", reason=decision.reason)
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
        self.transition()
        state = self._state
        if state in (ProcessState.EXITED, ProcessState.BACKOFF):
            # EXITED/BACKOFF -> STOPPED: nothing runs; cancel the pending restart.
            self._retry_at = None
            self._delay = 0.0
            self._set_gauge()
            self._set_state(ProcessState.STOPPED)
            return
        if state is not ProcessState.RUNNING:
            return
        log.info("Stopping %s process", self.name)
        self._record("stop")
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
            pid = await self.runner.start(process.launch_spec())
        except OSError as exc:
            # -> BACKOFF: a binary that cannot be spawned is retried later, not in a loop.
            self._record("start_failed", reason=str(exc))
            self._process = None
            self._enter_backoff(f"could not be started ({exc})")
            raise ProcessStartError(
                f"Error when attempting to start {self.name} process: {exc}"
            ) from exc
        self._record("start", pid=pid)
        self._process = process
        self._started_at = self.clock()
        self._retry_at = None
        self._set_state(ProcessState.RUNNING)

    def _backoff_over(self, args: A) -> bool:
        if self._retry_at is None:
            return True  # forgotten (`forget_backoff`): due at once
        if self._process is not None and isinstance(
            decision := self._process.restart_decision(args), Restart
        ):
            log.info("%s: not waiting for the backoff: %s", self.name, decision.reason)
            return True
        return self.clock() >= self._retry_at

    def _enter_backoff(self, what: str) -> None:
        self._delay = self.backoff.next_delay(self._delay)
        self._retry_at = self.clock() + self._delay
        self._set_gauge()
        log.warning(
            "%s %s: restarting it in %.1f s (crash-loop backoff)", self.name, what, self._delay
        )
        self._record("backoff", delay=self._delay, reason=what)
        self._set_state(ProcessState.BACKOFF)

    def _record(self, event: str, **fields: object) -> None:
        if self.journal is not None:
            self.journal.record(self.name, event, **fields)

    def _set_gauge(self) -> None:
        self.metrics.restart_backoff.labels(self.name).set(self._delay)

    def _set_state(self, new: ProcessState) -> None:
        check_transition(self.name, self._state, new)
        if new is not self._state:
            log.debug("%s: %s -> %s", self.name, self._state.value, new.value)
        self._state = new


def manager_of(
    managers: Iterable[ProcessManager[Any, Any]], process_type: type[Process[C, A]]
) -> ProcessManager[C, A]:
    """The manager of `process_type` among `managers` (there is one per program)."""
    for manager in managers:
        if manager.process_type is process_type:
            return manager
    raise LookupError(f"no manager runs {process_type.NAME}")


__all__ = ["DEFAULT_BACKOFF", "Backoff", "ProcessManager", "manager_of"]
