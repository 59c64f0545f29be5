"""What happened to a testnet, in time order: the driver's own events (registry versions written,
faults injected and healed, health transitions, metric checks) and the orchestrators' (each
program's starts, exits, restarts, backoffs), as one list of `Event`s for a test's report.

The driver's events go to a `Journal` as they happen (kept in memory and appended to
`events.jsonl` in the testnet's directory); the orchestrators' come from the journal each
orchestrator writes in its node's logs (`harness.node.orchestrator.events`), read back from a
test's artifacts by `orchestrator_events`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.node.layout import EVENTS_FILE

LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class Event:
    """One thing that happened: when (Unix time), where (a node, a program, both or neither:
    the testnet), what kind (`registry`, `fault`, `heal`, `health`, `check`, or the
    orchestrator's `start`, `exit`, `backoff`, `restart`, `stop`), said in a line of text."""

    t: float
    kind: str
    text: str
    node: str | None = None
    program: str | None = None
    level: str = "info"
    source: str = "harness"
    """``harness`` (the driver saw or did it) or ``orchestrator`` (a node's orchestrator did)."""

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class Journal:
    """The driver's events of one testnet, in memory and appended to `path` (if given) one JSON
    object a line as they happen. Safe to use from several threads."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def record(
        self,
        kind: str,
        text: str,
        node: str | None = None,
        program: str | None = None,
        level: str = "info",
        at: float | None = None,
    ) -> Event:
        """Journal an event, at `at` (a time of `clock`) when given, else now."""
        event = Event(self.clock() if at is None else at, kind, text, node, program, level)
        with self._lock:
            self._events.append(event)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(json.dumps(event.as_json()) + "\n")
        return event

    def events(self, since: float = float("-inf"), until: float = float("inf")) -> list[Event]:
        """The events recorded between `since` and `until` (Unix times), in order."""
        with self._lock:
            return [e for e in self._events if since <= e.t <= until]


def journal_events(path: Path) -> list[Event]:
    """The events a `Journal` appended to `path` (a testnet's `events.jsonl`, also in its
    artifacts); lines that are not such an event are left out."""
    events = []
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            for raw in file:
                try:
                    events.append(Event(**json.loads(raw)))
                except (ValueError, TypeError):
                    continue
    except FileNotFoundError:
        return []
    return events


def _orchestrator_text(line: dict[str, object]) -> tuple[str, str]:
    """The text and level of an orchestrator journal line."""
    kind = line.get("event")
    program = line.get("program")
    if kind == "start":
        return f"{program} started (pid {line.get('pid')})", "info"
    if kind == "start_failed":
        return f"{program} could not be started: {line.get('reason')}", "error"
    if kind == "exit":
        runtime = line.get("runtime")
        after = f" after {runtime:.1f} s" if isinstance(runtime, (int, float)) else ""
        if line.get("requested"):
            return f"{program} stopped ({line.get('status')}){after}", "info"
        return f"{program} exited on its own ({line.get('status')}){after}", "warning"
    if kind == "backoff":
        return f"{program} backs off {line.get('delay')} s: {line.get('reason')}", "warning"
    if kind == "restart":
        return f"{program} restarts: {line.get('reason')}", "info"
    if kind == "stop":
        return f"{program} asked to stop (SIGTERM)", "info"
    if kind == "registry":
        return f"orchestrator acted on registry version {line.get('version')}", "info"
    return f"{program} {kind}", "info"


def parse_orchestrator_journal(lines: Iterable[str]) -> list[Event]:
    """The events of an orchestrator's journal (one JSON object a line); lines that are not
    such an object (a line cut short by a kill) are left out."""
    events = []
    for raw in lines:
        try:
            line = json.loads(raw)
            t = float(line["t"])
            kind = str(line["event"])
        except (ValueError, KeyError, TypeError):
            continue
        text, level = _orchestrator_text(line)
        program = line.get("program")
        events.append(
            Event(
                t,
                kind,
                text,
                node=str(line.get("node")) if line.get("node") else None,
                program=str(program) if program else None,
                level=level,
                source="orchestrator",
            )
        )
    return events


def orchestrator_events(testnet_artifacts: Path) -> list[Event]:
    """Every orchestrator's events found in a testnet's artifacts (`nodes/<id>/events.jsonl`,
    as `Testnet.collect_artifacts` writes them), in time order."""
    events: list[Event] = []
    for path in sorted(testnet_artifacts.glob(f"nodes/*/{EVENTS_FILE}")):
        with path.open(encoding="utf-8", errors="replace") as file:
            events += parse_orchestrator_journal(file)
    return sorted(events, key=lambda e: e.t)
