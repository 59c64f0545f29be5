"""What a node service's tasks (`Service.tasks()`, as `docker service ps` lists them) say about
the node: which tasks are live or running, why a start failed or is stuck, and their summary in
a start's error. Plain functions of the task dicts and times, with no Docker client and no I/O.

A task is the engine's dict; what is read of it: `Status` (`State`, `Err`), `DesiredState`,
`CreatedAt` (RFC 3339, UTC, so that times compare as text) and `NodeID` (its machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Task = Mapping[str, Any]

FAILED_TASK_STATES = ("failed", "rejected", "orphaned")
LIVE_TASK_STATES = (
    "new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
)  # fmt: skip
PLACEMENT_PATIENCE = 5.0  # seconds a task may stay pending for a reason before the start fails
# Seconds a start may be stuck (`stuck`) before the swarm is asked for a new task: with no task
# meant to run, and with a running task whose name does not resolve.
NO_TASK_PATIENCE = 5.0
UNRESOLVED_PATIENCE = 10.0
# What the access proxy (microsocks) answers for a name it cannot resolve.
SOCKS_GENERAL_FAILURE = "General SOCKS server failure"


def state(task: Task) -> str | None:
    """The task's state (`new` ... `running`, `complete`, `failed`, ...)."""
    value: str | None = (task.get("Status") or {}).get("State")
    return value


def error(task: Task) -> str:
    """What the engine says went wrong with the task (`Status.Err`), "" for nothing."""
    value: str = (task.get("Status") or {}).get("Err", "")
    return value


def live(tasks: Iterable[Task]) -> list[Task]:
    """Tasks meant to run and not yet ended (from `new` to `running`)."""
    return [t for t in tasks if t.get("DesiredState") == "running" and state(t) in LIVE_TASK_STATES]


def running(tasks: Iterable[Task]) -> list[Task]:
    """Tasks that run now, whatever the swarm means them to do."""
    return [t for t in tasks if state(t) == "running"]


def problem(tasks: Sequence[Task], since: str, waited: float) -> str | None:
    """Why the node's task will not come up, if the swarm says so (`tasks`): a task created
    since `since` that failed, or one still pending with a reason (no machine satisfies its
    placement) after `PLACEMENT_PATIENCE` seconds (`waited`, since the start began)."""
    for task in reversed(tasks):
        if task.get("CreatedAt", "") < since:
            continue
        task_state, task_error = state(task), error(task)
        if task_state in FAILED_TASK_STATES:
            return f"its task {task_state}: {task_error}"
        if task_state == "pending" and task_error and waited > PLACEMENT_PATIENCE:
            return f"the swarm cannot place it: {task_error}"
    return None


def stuck(
    name: str,
    tasks: Iterable[Task],
    last: str,
    waited: float,
    resolve: Callable[[str], str | None],
) -> str | None:
    """Why the swarm will not bring node `name` up by itself, `waited` seconds into its start
    (`last`: what its last probe said), if it is one of the two ways seen after a stop and a
    start, once `NO_TASK_PATIENCE` seconds have passed: no task meant to run (the service scaled
    back to 1, the orchestrator made none; a task is made within a second otherwise), or a
    running task whose name the overlay's DNS does not resolve (the access proxy, microsocks,
    says "general failure" for that) after `UNRESOLVED_PATIENCE` seconds. `resolve` asks the
    overlay's DNS, and only when everything else points to a lost name."""
    if waited <= NO_TASK_PATIENCE:
        return None
    meant = live(tasks)
    if not meant:
        return "the swarm made no task for it"
    if (
        waited > UNRESOLVED_PATIENCE
        and SOCKS_GENERAL_FAILURE in last
        and running(meant)
        and resolve(name) is None
    ):
        return f"its task runs, but the overlay's DNS has no {name}"
    return None


def created_since(wall: float) -> str:
    """An RFC 3339 UTC time a second before `wall` (a `time.time()`), comparable as text with
    the engine's `CreatedAt`: a task created since then is one of this start's, not of an
    earlier one."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall - 1.0))


def summary(tasks: Iterable[Task]) -> str:
    """The last five tasks made, one a line (created, state, desired state, error)."""
    lines = [
        f"  {t.get('CreatedAt', '?')[:23]} {state(t)} "
        f"(desired {t.get('DesiredState')}) {error(t)}".rstrip()
        for t in sorted(tasks, key=lambda t: t.get("CreatedAt", ""))[-5:]
    ]
    return "\n".join(lines) or "  none"
