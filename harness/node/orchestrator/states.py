"""States of one managed node program, and which transitions between them are legal.

Stdlib only, like supervisor's `states.py`: every other orchestrator module imports it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class ProcessState(enum.Enum):
    """Where a managed program is in its life, as its `ProcessManager` sees it."""

    STOPPED = "stopped"  # not running, and nothing pending: started when a check wants it
    RUNNING = "running"  # started; no `transition()` has seen it exit yet
    STOPPING = "stopping"  # asked to stop (SIGTERM sent); waiting for the exit
    EXITED = "exited"  # exited on its own after a healthy uptime: restarted on the next pass
    BACKOFF = "backoff"  # exited (or failed to start) quickly: restarted once the delay expired


# A process exists (its pid is real) in these states.
ALIVE_STATES = frozenset({ProcessState.RUNNING, ProcessState.STOPPING})
# `ensure_running` may start a new process from these states.
STARTABLE_STATES = frozenset({ProcessState.STOPPED, ProcessState.EXITED, ProcessState.BACKOFF})

TRANSITIONS: Mapping[ProcessState, frozenset[ProcessState]] = {
    ProcessState.STOPPED: frozenset({ProcessState.RUNNING, ProcessState.BACKOFF}),
    ProcessState.RUNNING: frozenset(
        {ProcessState.STOPPING, ProcessState.EXITED, ProcessState.BACKOFF, ProcessState.STOPPED}
    ),
    ProcessState.STOPPING: frozenset({ProcessState.STOPPED}),
    ProcessState.EXITED: frozenset(
        {ProcessState.RUNNING, ProcessState.BACKOFF, ProcessState.STOPPED}
    ),
    ProcessState.BACKOFF: frozenset(
        {ProcessState.RUNNING, ProcessState.BACKOFF, ProcessState.STOPPED}
    ),
}


class IllegalTransition(RuntimeError):
    """A state change the state machine does not allow: a bug in the orchestrator."""

    def __init__(self, name: str, current: ProcessState, new: ProcessState) -> None:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
        super().__init__(
            f"{name}: illegal state transition {current.value} -> {new.value} "
            f"(allowed from {current.value}: {allowed})"
        )
        self.current = current
        self.new = new


def check_transition(name: str, current: ProcessState, new: ProcessState) -> None:
    """Raise `IllegalTransition` unless `current -> new` is allowed."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(name, current, new)
