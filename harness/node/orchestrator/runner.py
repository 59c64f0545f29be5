"""Running one program at a time: the `ProcessRunner` interface and `SubprocessRunner`.

`SubprocessRunner` has its `Launcher` start the program (forked by the node's fork server, or
exec'd) as the leader of a process group of its own, so `stop()` can signal its whole group:
SIGTERM, then SIGKILL after the grace period (the IC only sends SIGTERM; we escalate). A waiter
task per child waits for its end, records the exit status, makes sure nothing of its group is
left (a child that exits on its own may leave grandchildren holding its ports: they get the
same SIGTERM/SIGKILL treatment),
removes the pid file and calls `on_exit` to wake the main loop. The program counts as running
until all of that is done, so a new one never clashes with the remains of the old one.

Per program, in the node's `DataDir`: stdout+stderr are appended to its log (a header line per
start) and its pid file (the `harness.node.layout` format: pid, create time, argv) exists while
it runs, so a restarted orchestrator can find what its predecessor left (see `leftovers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from harness.node.layout import DataDir, PidRecord, remove_pid_file, write_pid_file
from harness.node.orchestrator import pgroup
from harness.node.orchestrator.launchers import ExecLauncher, Launched, Launcher
from harness.node.orchestrator.pgroup import KILL_TIMEOUT
from harness.node.orchestrator.process import LaunchSpec

log = logging.getLogger(__name__)

Spawn = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def describe_returncode(returncode: int) -> str:
    """`exit code 1` / `killed by signal 9 (SIGKILL)`, as asyncio reports a child's end."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-returncode} ({name})"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class ExitRecord:
    """How a program ended."""

    returncode: int
    runtime: float  # seconds between spawn and exit
    requested: bool  # stop() had been called: the exit was asked for

    def describe(self) -> str:
        return describe_returncode(self.returncode)


class ProcessRunner(Protocol):
    """Runs (at most) one instance of one program. Unit tests inject a fake."""

    @property
    def name(self) -> str: ...

    @property
    def last_exit(self) -> ExitRecord | None:
        """How the previous instance ended (None before the first exit)."""

    async def start(self, spec: LaunchSpec) -> int:
        """Spawn the program; return its pid. Raise `OSError` when it cannot be spawned."""

    def stop(self) -> None:
        """Ask the running instance to stop (SIGTERM, SIGKILL later); return at once."""

    def is_running(self) -> bool:
        """True from `start` until the instance (and its process group) is gone."""

    def pid(self) -> int | None: ...

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until no instance runs; False on timeout."""


@dataclass(eq=False)
class _Child:
    spec: LaunchSpec
    process: Launched
    started: float
    create_time: float | None
    stop_requested: bool = False
    term_sent: bool = False
    killer: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None  # already gone (and reaped): nothing to record


class SubprocessRunner:
    """Runs one program as a real child process in its own process group."""

    def __init__(
        self,
        name: str,
        data_dir: DataDir,
        stop_grace_period: float,
        on_exit: Callable[[], None] = lambda: None,
        spawn: Spawn | None = None,
        launcher: Launcher | None = None,
        binary: Path | None = None,
    ) -> None:
        self._name = name
        self.binary = binary  # run from this executable instead (`--program-binary`), exec'd
        self.launcher: Launcher = launcher or ExecLauncher(os.environ)
        self.data_dir = data_dir
        self.stop_grace_period = stop_grace_period
        self.on_exit = on_exit
        self._spawn = spawn or self._create_task
        self._tasks: set[asyncio.Task[None]] = set()
        self._child: _Child | None = None
        self._last_exit: ExitRecord | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def last_exit(self) -> ExitRecord | None:
        return self._last_exit

    @property
    def log_file(self) -> Path:
        return self.data_dir.log(self._name)

    @property
    def pid_file(self) -> Path:
        return self.data_dir.pid_file(self._name)

    def is_running(self) -> bool:
        return self._child is not None

    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    async def start(self, spec: LaunchSpec) -> int:
        if self._child is not None:
            raise RuntimeError(f"{self._name} process is still running (pid {self._child.pid})")
        if self.binary is not None:
            argv = (str(self.binary), *spec.argv[1:])
            spec = dataclasses.replace(spec, argv=argv, forkable=False)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        command = shlex.join(spec.argv)
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        with self.log_file.open("ab") as out:
            out.write(f"==== {now} orchestrator: starting {self._name}: {command}\n".encode())
            out.flush()
            try:
                process = await self.launcher.launch(spec, self.log_file, out.fileno())
            except OSError as exc:
                out.write(f"==== {now} orchestrator: cannot start {self._name}: {exc}\n".encode())
                raise
        child = _Child(spec, process, time.monotonic(), _create_time(process.pid))
        self._child = child
        log.info("Starting %s with command: %s (pid %d)", self._name, command, child.pid)
        self._write_pid_file(child)
        self._spawn(f"{self._name}_waiter", self._supervise(child))
        return child.pid

    def stop(self) -> None:
        child = self._child
        if child is None:
            log.debug("no %s process running", self._name)
            return
        child.stop_requested = True
        if child.term_sent:
            log.debug("%s (pid %d) is already stopping", self._name, child.pid)
            return
        self._terminate(child)

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        child = self._child
        if child is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await child.done.wait()
        except TimeoutError:
            return False
        return True

    # SIGTERM now, SIGKILL after the grace period.
    def _terminate(self, child: _Child) -> None:
        child.term_sent = True
        try:
            pgroup.signal_group(child.pid, signal.SIGTERM)
        except PermissionError as exc:
            raise OSError(
                exc.errno, f"Failed to kill {self._name} process with gpid {child.pid}: {exc}"
            ) from exc
        child.killer = self._spawn(f"{self._name}_stop", self._escalate(child))

    async def _escalate(self, child: _Child) -> None:
        await asyncio.sleep(self.stop_grace_period)
        if self._child is child:
            log.warning(
                "%s (pid %d) did not exit within %.1f s of SIGTERM: sending SIGKILL to its "
                "process group",
                self._name,
                child.pid,
                self.stop_grace_period,
            )
            with contextlib.suppress(PermissionError):
                pgroup.signal_group(child.pid, signal.SIGKILL)

    async def _supervise(self, child: _Child) -> None:
        record: ExitRecord | None = None
        try:
            returncode = await child.process.wait()
            record = ExitRecord(returncode, time.monotonic() - child.started, child.stop_requested)
            (log.info if record.requested else log.warning)(
                "%s exited. Exit Status: %s", self._name, record.describe()
            )
            await self._clear_group(child)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "waiting for %s (pid %d) failed; killing its group", self._name, child.pid
            )
            with contextlib.suppress(OSError):
                pgroup.signal_group(child.pid, signal.SIGKILL)
            record = record or ExitRecord(-signal.SIGKILL, time.monotonic() - child.started, True)
            raise
        finally:
            if record is not None:
                if child.killer is not None:
                    child.killer.cancel()
                self._remove_pid_file(child)
                self._child = None
                self._last_exit = record
                child.done.set()
                self.on_exit()

    async def _clear_group(self, child: _Child) -> None:
        members = pgroup.group_members(child.pid, child.create_time)
        if not members:
            return
        if not child.term_sent:
            log.warning(
                "%s exited but left %d process(es) in its process group (%s): stopping them",
                self._name,
                len(members),
                ", ".join(str(m.pid) for m in members),
            )
            self._terminate(child)
        if not await pgroup.wait_group_empty(
            child.pid, self.stop_grace_period + KILL_TIMEOUT, child.create_time
        ):
            log.error(
                "process group %d of %s still has live members after SIGKILL; giving up on it",
                child.pid,
                self._name,
            )

    def _write_pid_file(self, child: _Child) -> None:
        record = PidRecord(child.pid, child.create_time, self._name, child.spec.argv)
        try:
            write_pid_file(self.pid_file, record)
        except OSError as exc:
            # The program runs anyway; only a restarted orchestrator would miss it.
            log.error("cannot write %s: %s", self.pid_file, exc)

    def _remove_pid_file(self, child: _Child) -> None:
        remove_pid_file(self.pid_file, child.pid)

    def _create_task(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
