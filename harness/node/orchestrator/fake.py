"""`FakeRunner`: a `ProcessRunner` that spawns nothing, for tests of managers and checks.

It records every start (the `LaunchSpec`) and stop; the test decides when the "process" exits
(`exit()`), like supervisor's `DummyOptions` or httpx's `MockTransport`.
"""

from __future__ import annotations

from harness.node.orchestrator.process import LaunchSpec
from harness.node.orchestrator.runner import ExitRecord


class FakeRunner:
    """Pretends to run one program."""

    def __init__(self, name: str, first_pid: int = 1000) -> None:
        self._name = name
        self._next_pid = first_pid
        self._pid: int | None = None
        self._last_exit: ExitRecord | None = None
        self.starts: list[LaunchSpec] = []
        self.stops = 0
        self.stop_requested = False
        self.start_error: OSError | None = None  # raised by the next start() calls when set
        self.stop_error: OSError | None = None  # raised by the next stop() calls when set
        self.exit_on_stop = False  # exit as soon as stop() is called

    @property
    def name(self) -> str:
        return self._name

    @property
    def last_exit(self) -> ExitRecord | None:
        return self._last_exit

    async def start(self, spec: LaunchSpec) -> int:
        if self._pid is not None:
            raise RuntimeError(f"{self._name} process is still running (pid {self._pid})")
        if self.start_error is not None:
            raise self.start_error
        self.starts.append(spec)
        self._pid = self._next_pid
        self._next_pid += 1
        self.stop_requested = False
        return self._pid

    def stop(self) -> None:
        if self._pid is None:
            return
        if self.stop_error is not None:
            raise self.stop_error
        self.stops += 1
        self.stop_requested = True
        if self.exit_on_stop:
            self.exit(-15)

    def exit(self, returncode: int = 0, runtime: float = 3600.0) -> None:
        """The running "process" ends now, after `runtime` seconds."""
        if self._pid is None:
            raise RuntimeError(f"{self._name} is not running")
        self._pid = None
        self._last_exit = ExitRecord(returncode, runtime, self.stop_requested)

    def is_running(self) -> bool:
        return self._pid is not None

    def pid(self) -> int | None:
        return self._pid

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._pid is None

    @property
    def last_spec(self) -> LaunchSpec:
        return self.starts[-1]
