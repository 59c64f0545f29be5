"""Finding and stopping programs left by a previous orchestrator instance (killed -9, OOM...).

A restarted orchestrator reads the pid files in `<data-dir>/run` (`DataDir.run`, in the format
of `harness.node.layout`) before starting anything. A pid counts as a leftover only if the
process with that pid has the recorded psutil create_time (a reused pid belongs to someone else
and is never touched). Its process group gets SIGTERM, then SIGKILL after the grace period, so
its ports are free and no second replica runs. When the leader is gone but members of its group
live on (grandchildren), those are stopped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.node.layout import PID_FILE_SUFFIX, PidRecord, read_pid_file
from harness.node.orchestrator import pgroup
from harness.node.orchestrator.pgroup import KILL_TIMEOUT

log = logging.getLogger(__name__)

CREATE_TIME_TOLERANCE = 0.01  # psutil create_time is exact to the clock tick


@dataclass(frozen=True)
class PidFile:
    """One pid file and what it says."""

    path: Path
    record: PidRecord


@dataclass(frozen=True)
class Leftover:
    """A live program (or the live rest of its process group) of a previous instance."""

    pid_file: PidFile
    leader_alive: bool
    members: tuple[int, ...]

    @property
    def record(self) -> PidRecord:
        return self.pid_file.record


def read_pid_files(run_dir: Path) -> list[PidFile]:
    """Every readable pid file in `run_dir`; unreadable ones are logged and removed."""
    found = []
    for path in sorted(run_dir.glob(f"*{PID_FILE_SUFFIX}")):
        record = read_pid_file(path)
        if record is None:
            log.warning("ignoring unreadable pid file %s", path)
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            found.append(PidFile(path, record))
    return found


def _verify(pid_file: PidFile) -> Leftover | None:
    path, record = pid_file.path, pid_file.record
    if record.create_time is None:
        return None  # the program was gone before its create_time could be read
    leader_alive = False
    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.create_time) > CREATE_TIME_TOLERANCE:
            log.info(
                "pid file %s: pid %d now belongs to another process (%s); not touching it",
                path,
                record.pid,
                " ".join(process.cmdline()) or process.name(),
            )
            return None
        leader_alive = pgroup.is_alive(process)
    except psutil.NoSuchProcess:
        pass
    except psutil.Error as exc:
        log.warning("pid file %s: cannot inspect pid %d: %s", path, record.pid, exc)
        return None
    members = pgroup.group_members(record.pid, record.create_time)
    if not leader_alive and not members:
        return None
    return Leftover(pid_file, leader_alive, tuple(m.pid for m in members))


def find_leftovers(run_dir: Path) -> tuple[list[Leftover], list[PidFile]]:
    """(leftovers, stale pid files) found in `run_dir`."""
    leftovers: list[Leftover] = []
    stale: list[PidFile] = []
    for pid_file in read_pid_files(run_dir):
        found = _verify(pid_file)
        if found is None:
            stale.append(pid_file)
        else:
            leftovers.append(found)
    return leftovers, stale


async def stop_leftovers(run_dir: Path, grace: float) -> list[Leftover]:
    """Stop every leftover's process group (SIGTERM, SIGKILL after `grace`), remove the pid
    files, and return what was found."""
    leftovers, stale = find_leftovers(run_dir)
    for pid_file in stale:
        record = pid_file.record
        log.info(
            "removing stale pid file %s (%s pid %d is gone)", pid_file.path, record.name, record.pid
        )
        with contextlib.suppress(OSError):
            pid_file.path.unlink()
    if not leftovers:
        return []
    for leftover in leftovers:
        record = leftover.record
        log.warning(
            "found %s left by a previous orchestrator: pid %d (%s), process group members %s, "
            "command %s: stopping its process group",
            record.name,
            record.pid,
            "alive" if leftover.leader_alive else "gone",
            list(leftover.members),
            " ".join(record.argv),
        )
        _signal(leftover, signal.SIGTERM)
    await asyncio.gather(*(_finish(leftover, grace) for leftover in leftovers))
    return leftovers


def _signal(leftover: Leftover, sig: signal.Signals) -> None:
    record = leftover.record
    if leftover.leader_alive:
        with contextlib.suppress(PermissionError):
            pgroup.signal_group(record.pid, sig)
    else:
        # The pgid is still reserved by the live members, so it cannot have been reused.
        pgroup.kill_members(pgroup.group_members(record.pid, record.create_time), sig)


async def _finish(leftover: Leftover, grace: float) -> None:
    record = leftover.record
    if not await pgroup.wait_group_empty(record.pid, grace, record.create_time):
        log.warning(
            "leftover %s (pgid %d) did not exit within %.1f s of SIGTERM: sending SIGKILL",
            record.name,
            record.pid,
            grace,
        )
        _signal(leftover, signal.SIGKILL)
        if not await pgroup.wait_group_empty(record.pid, KILL_TIMEOUT, record.create_time):
            log.error("leftover %s (pgid %d) survived SIGKILL", record.name, record.pid)
    log.info("leftover %s (pid %d) stopped", record.name, record.pid)
    with contextlib.suppress(OSError):
        leftover.pid_file.path.unlink()
