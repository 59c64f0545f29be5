"""What a fork server and its client say to each other: JSON lines on one Unix stream socket.

    client -> server  {"id": 7, "spawn": "replica", "argv": [...], "env": {...},
                       "log": "/var/lib/node/logs/replica.log", "new_session": false}
    server -> client  {"id": 7, "pid": 4242}          the child is running
                      {"id": 7, "error": "..."}       it could not be forked
                      {"exit": 4242, "status": 9}     a child ended: its `os.waitpid` status

Requests are answered in the order they came; exits come whenever they happen.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Spawn:
    """Fork one program: `name` (one of `harness.node.programs.PROGRAMS`) with `argv` (its path
    first, as a console script's), `env` added to the server's environment, stdout and stderr
    appended to `log`; in a session of its own (`new_session`) or a process group of its own."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    log: str = os.devnull
    new_session: bool = False

    def message(self, request_id: int) -> bytes:
        return encode(
            {
                "id": request_id,
                "spawn": self.name,
                "argv": list(self.argv),
                "env": dict(self.env),
                "log": self.log,
                "new_session": self.new_session,
            }
        )

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Spawn:
        return cls(
            str(message["spawn"]),
            tuple(str(arg) for arg in message["argv"]),
            {str(k): str(v) for k, v in dict(message.get("env") or {}).items()},
            str(message.get("log") or os.devnull),
            bool(message.get("new_session")),
        )


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"not a message: {line[:200]!r}")
    return message


def returncode(status: int) -> int:
    """An `os.waitpid` status as asyncio and subprocess report it: the exit code, or minus the
    signal that killed the process."""
    return os.waitstatus_to_exitcode(status)


def describe(status: int) -> str:
    code = returncode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
