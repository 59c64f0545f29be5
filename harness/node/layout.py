"""Where things are on a node: the ports its programs serve, its data directory, and the pid
files in it. The one place they are written down: the node programs and the driver both read
them from here.

Stdlib only (like `states.py`), so that anything may import it without pulling in more.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Port(enum.IntEnum):
    """The ports of a node, as the IC's programs use them."""

    IC_GATEWAY = 80  # ic-gateway's public HTTP, on cloud-engine nodes
    IC_BOUNDARY = 443  # ic-boundary's API (plain HTTP in testnets), on API boundary nodes
    DASHBOARD = 7070  # the orchestrator's dashboard (the IC's ORCHESTRATOR_DASHBOARD_PORT)
    REPLICA_HTTP = 8080  # the replica's public API
    REPLICA_METRICS = 9090  # the replica's metrics
    ORCHESTRATOR_METRICS = 9091  # the orchestrator's metrics (the IC's PROMETHEUS_HTTP_PORT)
    IC_BOUNDARY_METRICS = 9324  # ic-boundary's metrics
    IC_GATEWAY_METRICS = 9325  # ic-gateway's metrics


UNPRIVILEGED_IC_GATEWAY_PORT = 8880
"""Where ic-gateway listens on the local backend when port 80 may not be bound (not root)."""
REGISTRY_SERVICE_PORT = 8000
"""The registry service's port (`registry-service`, the swarm backend's registry)."""

CONTAINER_DATA_DIR = Path("/var/lib/node")
"""A node's data directory inside its container (the node image's entrypoint writes there)."""
REPLICA_FAULTS_FILE = "replica-faults.json"
"""The replica's fault knobs, relative to the data directory (`DataDir.replica_faults`)."""
EVENTS_FILE = "events.jsonl"
"""The orchestrator's event journal, in the logs directory (`DataDir.events`)."""
PID_FILE_SUFFIX = ".pid"
"""How a pid file's name ends (`DataDir.pid_file`)."""


@dataclass(frozen=True)
class DataDir:
    """A node's data directory (`--data-dir`): its programs' logs, their pid files, the fault
    knobs of its replica."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def log(self, program: str) -> Path:
        """The log of a program the orchestrator runs (`replica`, `ic-gateway`, ...)."""
        return self.logs / f"{program}.log"

    @property
    def events(self) -> Path:
        """The orchestrator's event journal (`harness.node.orchestrator.events`)."""
        return self.logs / EVENTS_FILE

    def pid_file(self, program: str) -> Path:
        """The pid file of a program the orchestrator runs, or of the orchestrator itself."""
        if program == "orchestrator":
            return self.root / f"orchestrator{PID_FILE_SUFFIX}"
        return self.run / f"{program}{PID_FILE_SUFFIX}"

    @property
    def orchestrator_lock(self) -> Path:
        """Held (flock) by the orchestrator managing this node: two must never share one."""
        return self.root / "orchestrator.lock"

    @property
    def orchestrator_log(self) -> Path:
        """The orchestrator's own output (written by whoever starts it)."""
        return self.root / "orchestrator.log"

    @property
    def replica_faults(self) -> Path:
        """The replica's fault knobs (`harness.node.replica`), read at start and per request."""
        return self.root / REPLICA_FAULTS_FILE


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says: the pid and, to tell a reused pid from the program's, the
    process's psutil create time (None for a bare pid, as the container entrypoint writes)."""

    pid: int
    create_time: float | None = None
    name: str = ""
    argv: tuple[str, ...] = ()


def parse_pid_record(text: str, name: str = "") -> PidRecord | None:
    """A pid file's content: JSON (`{"pid", "create_time", "name", "argv"}`) or a bare pid;
    None when it is neither."""
    text = text.strip()
    if text.isdigit():
        return PidRecord(int(text), name=name)
    try:
        data: Any = json.loads(text)
        create_time = data.get("create_time")
        return PidRecord(
            int(data["pid"]),
            None if create_time is None else float(create_time),
            str(data.get("name", name)),
            tuple(str(arg) for arg in data.get("argv", ())),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in a pid file; None when it is missing or unreadable."""
    try:
        return parse_pid_record(path.read_text(), path.stem)
    except OSError:
        return None


def write_pid_file(path: Path, record: PidRecord) -> None:
    """Replace a pid file atomically with `record` (as JSON)."""
    document = {
        "name": record.name,
        "pid": record.pid,
        "create_time": record.create_time,
        "argv": list(record.argv),
    }
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(document) + "\n")
    staging.replace(path)


def remove_pid_file(path: Path, pid: int) -> None:
    """Remove a pid file if it still names `pid` (a newer instance's file stays)."""
    record = read_pid_file(path)
    if record is not None and record.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
