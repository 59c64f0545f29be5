"""The orchestrator's event journal: what happened to its programs, one JSON object a line, in
`logs/events.jsonl` of the node's data directory (`DataDir.events`), for the harness's report.

Each line: ``{"t": <Unix time>, "node": <node id>, "program": <name>, "event": <kind>, ...}``
with the kind's own fields:

- ``start``: ``pid`` (a program spawned);
- ``start_failed``: ``reason`` (it could not be spawned);
- ``exit``: ``status`` ("exit code 1", "killed by signal 9 (SIGKILL)"), ``runtime`` (s),
  ``requested`` (whether the orchestrator had asked it to stop);
- ``backoff``: ``delay`` (s before the next start), ``reason``;
- ``restart``: ``reason`` (new arguments: the running instance is stopped, a new one follows);
- ``stop``: the orchestrator asks the running instance to stop;
- ``registry``: ``version``, for program ``orchestrator`` (the version it acted on);
- ``reset``: ``backoffs`` (program -> the delay in s forgotten; programs without a backoff are
  left out), for program ``orchestrator``: the harness's `POST /reset` (not the IC's) made
  every program forget its crash-loop backoff.

Lines are written whole and flushed at once, so a reader sees complete lines even while the
orchestrator runs. A journal that cannot be written logs why once and records nothing more:
supervision never fails for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class EventJournal:
    """Appends events to a file (see the module's docstring)."""

    def __init__(self, path: Path, node_id: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.node_id = node_id
        self.clock = clock
        self._file: IO[str] | None = None
        self._broken = False

    def record(self, program: str, event: str, **fields: object) -> None:
        """Append one event now."""
        if self._broken:
            return
        line = json.dumps(
            {
                "t": round(self.clock(), 6),
                "node": self.node_id,
                "program": program,
                "event": event,
                **fields,
            },
            separators=(",", ":"),
        )
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as exc:
            self._broken = True
            log.error(
                "cannot write the event journal %s, recording no more events: %s", self.path, exc
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
