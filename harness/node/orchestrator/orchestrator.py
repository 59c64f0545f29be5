"""The orchestrator: wires managers, checks, servers and the registry, and runs the main loop.

One asyncio loop (uvloop) makes passes; each pass first lets every manager fold what its program
did since the last pass (an exit) into its state (`ProcessManager.transition()`), then runs the
upgrade check and the boundary-node check on the latest good registry snapshot. A pass happens
when
  (a) the registry poller (every `--registry-poll-interval`) sees a new version,
  (b) a child exits (its waiter wakes the loop),
  (c) `--check-interval` passed since the last pass (10 s, like the IC), or
  (d) a crash-loop backoff expires, or
  (e) the harness's `POST /reset` on the dashboard (ours, not the IC's) asks for one.
Between passes the loop sleeps on an event: no busy loop. SIGTERM/SIGINT end the loop, stop
every program (SIGKILL after the grace period) and return 0.

A reset is carried out by the loop, never by the dashboard's handler: `reset()` queues a
request and wakes the loop; the next pass, right after folding the exits, makes every manager
forget its crash-loop backoff (`ProcessManager.forget_backoff`: a program in BACKOFF is then
started by that pass's checks if the policy wants it, a running one is untouched), journals a
`reset` event, counts it in `orchestrator_resets_total`, and hands every queued request the
dashboard's lines as they are after the pass. No pass within `RESET_TIMEOUT`: `ResetUnavailable`
(the dashboard's 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from prometheus_client import make_asgi_app

from harness.node.description import Role
from harness.node.layout import parse_pid_record
from harness.node.orchestrator.args import PROCESS_NAMES, OrchestratorConfig
from harness.node.orchestrator.boundary_node import BoundaryNodeCheck
from harness.node.orchestrator.dashboard import (
    Dashboard,
    DashboardInfo,
    ProcessLine,
    ResetUnavailable,
)
from harness.node.orchestrator.errors import OrchestratorError
from harness.node.orchestrator.events import EventJournal
from harness.node.orchestrator.launchers import ExecLauncher, Launcher
from harness.node.orchestrator.leftovers import stop_leftovers
from harness.node.orchestrator.manager import (
    DEFAULT_BACKOFF,
    Backoff,
    ProcessManager,
    manager_of,
)
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.pgroup import KILL_TIMEOUT
from harness.node.orchestrator.policy import programs_of
from harness.node.orchestrator.processes import ReplicaProcess, process_specs
from harness.node.orchestrator.runner import ProcessRunner, SubprocessRunner
from harness.node.orchestrator.states import ProcessState
from harness.node.orchestrator.tasks import TaskTracker
from harness.node.orchestrator.upgrade import UpgradeCheck
from harness.node.registry import RegistryClient, RegistrySnapshot
from harness.node.registry.client import open_source
from harness.node.registry.records import FEATURE_IC_GATEWAY
from harness.node.serve import Servers, bind

log = logging.getLogger(__name__)

# Sleep this much past a backoff deadline: asyncio may fire timers a clock tick early.
_TIMER_SLACK = 0.01

RunnerFactory = Callable[[str], ProcessRunner]
MAIN_LOOP_TASK = "main_loop"
RESET_TIMEOUT = 10.0  # how long `POST /reset` waits for the pass that carries it out


class FatalError(Exception):
    """The orchestrator cannot run at all (port taken, data dir in use)."""


class Orchestrator:
    """One node's orchestrator."""

    def __init__(
        self,
        config: OrchestratorConfig,
        runner_factory: RunnerFactory | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        launcher: Launcher | None = None,
    ) -> None:
        self.config = config
        self.launcher: Launcher = launcher or ExecLauncher(os.environ)
        self.clock = clock
        self.metrics = OrchestratorMetrics(config.version, PROCESS_NAMES)
        self.tasks = TaskTracker(self.metrics)
        self.registry = RegistryClient(
            open_source(config.registry_local_store, config.registry_url),
            on_error=self._on_registry_error,
        )
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._acted_version = 0
        # `reset()` requests the next pass carries out, answered with the dashboard's lines.
        self._resets: list[asyncio.Future[DashboardInfo]] = []
        self.journal = EventJournal(config.layout.events, config.node_id)
        make_runner = runner_factory or self._subprocess_runner
        # One manager per program, in start order; the policy picks its programs from them.
        self.specs = {spec.name: spec for spec in process_specs()}
        self.managers: list[ProcessManager[Any, Any]] = [
            ProcessManager(
                spec.process_type,
                spec.config(config),
                make_runner(spec.name),
                self.metrics,
                spec.backoff(backoff),
                clock,
                self.journal,
            )
            for spec in self.specs.values()
        ]
        managed = [
            (spec.program, m) for spec, m in zip(self.specs.values(), self.managers, strict=True)
        ]
        self.subnet_processes = programs_of(Role.REPLICA, managed)
        self.boundary = programs_of(Role.API_BOUNDARY, managed)
        gates = frozenset({FEATURE_IC_GATEWAY}) if config.enable_ic_gateway else frozenset()
        self.upgrade = UpgradeCheck(
            config.node_id, self.subnet_processes, gates, self.metrics, self.tasks
        )
        self.boundary_check = BoundaryNodeCheck(config.node_id, self.boundary, gates, self.tasks)

    def _subprocess_runner(self, name: str) -> ProcessRunner:
        return SubprocessRunner(
            name,
            self.config.layout,
            self.specs[name].stop_grace(self.config),
            on_exit=self._wake.set,
            spawn=self.tasks.spawn,
            launcher=self.launcher,
            binary=self.config.program_binaries.get(name),
        )

    def _on_registry_error(self, version: int, exc: Exception) -> None:
        self.metrics.registry_errors.inc()

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code. Raise `FatalError` if it cannot."""
        config = self.config
        layout = config.layout
        try:
            for directory in (layout.root, layout.logs, layout.run):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FatalError(f"cannot create the data dir {config.data_dir}: {exc}") from exc
        with self._lock_data_dir():
            servers = Servers()
            try:
                servers.add(
                    "metrics", make_asgi_app(self.metrics.registry), config.metrics_listen_addr
                )
                dashboard_socket = bind(config.dashboard_listen_addr, "dashboard")
            except OSError as exc:
                raise FatalError(exc.strerror or str(exc)) from exc
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig)
            try:
                return await self._serve(servers, dashboard_socket)
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _serve(self, servers: Servers, dashboard_socket: socket.socket) -> int:
        config = self.config
        log.info(
            "orchestrator %s starting for node %s (metrics %s, dashboard %s)",
            config.version,
            config.node_id,
            config.metrics_listen_addr,
            config.dashboard_listen_addr,
        )
        # Before starting anything: no port clash with, and no second copy of, a program that a
        # previous instance left running.
        found = await stop_leftovers(config.layout.run, config.stop_grace_period)
        if found:
            log.info("stopped %d program(s) left by a previous orchestrator", len(found))
        dashboard = await Dashboard(self.dashboard_info, self.reset).serve(dashboard_socket)
        metrics_task = self.tasks.spawn("metrics", servers.run(handle_signals=False))
        self.tasks.spawn_forever("registry_replicator", self._watch_registry)
        try:
            await self._main_loop()
        finally:
            await self._stop_programs()
            await self.launcher.close()
            servers.stop()
            dashboard.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(servers.graceful_timeout + 1):
                    await asyncio.shield(metrics_task)
            await self.tasks.cancel_all()
            self.journal.close()
        log.info("orchestrator stopped")
        return 0

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        if self._stopping.is_set():
            log.info("already stopping")
            return
        log.info("received %s: stopping", sig.name if sig else "a stop request")
        self._stopping.set()
        self._wake.set()

    @contextlib.contextmanager
    def _lock_data_dir(self) -> Iterator[None]:
        """Hold a lock on the data dir: two orchestrators must never manage one node."""
        path = self.config.layout.orchestrator_lock
        try:
            handle: IO[str] = path.open("a+")
        except OSError as exc:
            raise FatalError(f"cannot open {path}: {exc}") from exc
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = parse_pid_record(handle.read())
                raise FatalError(
                    f"data dir {self.config.data_dir} is in use by another orchestrator "
                    f"(pid {holder.pid if holder else 'unknown'})"
                ) from None
            # A bare pid, written in place: a file renamed over it would not be the one locked.
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()

    # ------------------------------------------------------------------ the loop
    async def _main_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self.run_pass()
                except Exception as exc:
                    # The checks catch their own failures: this is a bug. Count it, keep going.
                    self.tasks.record_failure(MAIN_LOOP_TASK, exc)
                if self._stopping.is_set():
                    break
                await self._sleep()
        finally:
            resets, self._resets = self._resets, []
            for request in resets:
                if not request.done():
                    request.set_exception(_stopping_unavailable())

    async def run_pass(self) -> None:
        """One pass: fold every program's exit into its state, carry out the queued resets,
        then the upgrade check and the boundary-node check on the latest good snapshot."""
        for manager in self.managers:
            manager.transition()
        resets = [request for request in self._resets if not request.done()]
        self._resets = []
        if resets:
            self._forget_backoffs()
        try:
            snapshot = await self._poll_registry()
            version = snapshot.version if snapshot else 0
            if version != self._acted_version:
                self.journal.record("orchestrator", "registry", version=version)
            self._acted_version = version
            await self.upgrade.run(snapshot)
            await self.boundary_check.run(snapshot)
        finally:
            if resets:
                info = self.dashboard_info()
                for request in resets:
                    if not request.done():
                        request.set_result(info)

    # ------------------------------------------------------------------ reset (harness-only)
    async def reset(self, timeout: float = RESET_TIMEOUT) -> DashboardInfo:
        """The harness's `POST /reset`: have the next pass make every program forget its
        crash-loop backoff (see the module's docstring); return the dashboard's lines as they
        are after that pass. Raises `ResetUnavailable` when no pass finished it within `timeout`
        seconds (a request that timed out before a pass took it is dropped), or when the
        orchestrator is stopping."""
        if self._stopping.is_set():
            raise _stopping_unavailable()
        request: asyncio.Future[DashboardInfo] = asyncio.get_running_loop().create_future()
        self._resets.append(request)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                return await request
        except TimeoutError:
            raise ResetUnavailable(
                f"Service unavailable. The orchestrator's loop did not finish a pass with the "
                f"reset within {timeout:g} s."
            ) from None

    def _forget_backoffs(self) -> None:
        backoffs: dict[str, float] = {}
        for manager in self.managers:
            in_backoff = manager.state is ProcessState.BACKOFF
            delay = manager.forget_backoff()
            if delay > 0 or in_backoff:
                backoffs[manager.name] = delay
        self.metrics.resets.inc()
        self.journal.record("orchestrator", "reset", backoffs=backoffs)
        log.info(
            "reset: crash-loop backoffs forgotten (%s)",
            ", ".join(f"{name} {delay:g} s" for name, delay in backoffs.items()) or "none had one",
        )

    async def _sleep(self) -> None:
        timeout = self.config.check_interval
        due = [t for m in self.managers if (t := m.next_wakeup()) is not None]
        if due:
            timeout = min(timeout, max(0.0, min(due) - self.clock()) + _TIMER_SLACK)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _poll_registry(self) -> RegistrySnapshot | None:
        if self.registry.source.blocking:
            # In a thread: a registry service may be slow to answer, the loop must not wait.
            snapshot = await asyncio.to_thread(self.registry.poll)
        else:
            snapshot = self.registry.poll()  # a stat (a local store): a thread hop costs more
        if snapshot is not None:
            self.metrics.registry_version.set(snapshot.version)
        return snapshot

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(self.config.registry_poll_interval)
            snapshot = await self._poll_registry()
            if snapshot is not None and snapshot.version != self._acted_version:
                log.debug("registry version %d: waking the main loop", snapshot.version)
                self._wake.set()

    async def _stop_programs(self) -> None:
        log.info("Shut down the upgrade loop")
        for stop in (self.subnet_processes.stop_all, self.boundary.stop_all):
            try:
                stop()
            except OrchestratorError as exc:
                log.error("%s", exc)
        grace = max((s.stop_grace(self.config) for s in self.specs.values()), default=0.0)
        timeout = grace + KILL_TIMEOUT + 1
        results = await asyncio.gather(
            *(m.runner.wait_stopped(timeout) for m in self.managers), return_exceptions=True
        )
        for manager, result in zip(self.managers, results, strict=True):
            if result is not True:
                log.error("%s did not stop within %.0f s: %r", manager.name, timeout, result)

    # ------------------------------------------------------------------ dashboard
    def dashboard_info(self) -> DashboardInfo:
        snapshot = self.registry.snapshot
        replica = manager_of(self.managers, ReplicaProcess).current
        return DashboardInfo(
            node_id=self.config.node_id,
            registry_version=snapshot.version if snapshot else None,
            subnet=self.upgrade.assignment.describe(),
            processes=[ProcessLine(m.name, m.pid(), m.state.value) for m in self.managers],
            replica_version=replica.version if replica else None,
            ic_gateway_enabled=FEATURE_IC_GATEWAY in self.upgrade.open_gates,
            orchestrator_version=self.config.version,
        )


def _stopping_unavailable() -> ResetUnavailable:
    return ResetUnavailable("Service unavailable. The orchestrator is stopping: nothing was reset.")
