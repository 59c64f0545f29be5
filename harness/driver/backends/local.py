"""The local backend (the default): every node is an orchestrator process on its own loopback
address 127.A.B.n, with the node programs under it, so each node's ports (`harness.node.layout`)
are real and distinct. No Docker needed.

Orchestrators are forked, each into a session of its own, by the run's template: one process
per run (and harness process) that has imported every node program (`harness.node.forkserver`),
exec'd with the run's tags in its environment, so that the sweep finds everything forked from it.
A node therefore costs no interpreter of its own (`--spawn exec` makes each orchestrator a fresh
one, as before). A node's processes are those of its orchestrators' sessions (its programs
keep their orchestrator's session), found with the run's tags.

The backend watches its orchestrators as systemd would with `Restart=always` (a pidfd per
orchestrator says when it ends): one that exits while its node should run (killed -9, say) is
started again after 0.1 s, at most 5 times in 10 s; the new orchestrator stops what the old one
left before starting anything. Faults: a node
is paused with SIGSTOP to all its processes (SIGCONT resumes it) and partitioned with iptables
rules that drop all traffic to and from its address (`local_firewall`).

Where binding port 80 is not permitted (not root and no CAP_NET_BIND_SERVICE) the gateways
listen on 8880 instead; this is said once, and `endpoint(node, 80)` maps to it. Partitions need
iptables and root: without them the backend says so (`lacks`), and a test that partitions a
node is skipped with that reason.

Its sweep kills the process groups of the tagged processes of dead runs (`Run.process_tags`)
and removes their partition rules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.driver.backends import local_addresses, local_firewall
from harness.driver.backends.base import Backend, BackendOptions, write_file
from harness.driver.backends.capabilities import (
    NodeFiles,
    Partitionable,
    Pausable,
    PrometheusBeside,
    Signallable,
    Stoppable,
)
from harness.driver.backends.prometheus_process import ProcessServer
from harness.driver.errors import HarnessError, NodeStartError
from harness.driver.holds import HoldWatch
from harness.driver.run import (
    NODE_ID_ENV,
    TESTNET_ID_ENV,
    Run,
    kill_processes,
    tagged_processes,
)
from harness.driver.state import state_root
from harness.driver.topology import Plan, PlannedNode
from harness.node.forkserver.client import ForkClient
from harness.node.forkserver.protocol import Spawn, describe
from harness.node.layout import (
    UNPRIVILEGED_IC_GATEWAY_PORT,
    DataDir,
    PidRecord,
    Port,
    read_pid_file,
    write_pid_file,
)

log = logging.getLogger(__name__)

_warned_port_80 = False


RESTART_DELAY = 0.1  # systemd's RestartSec default
RESTART_BURST = 5  # systemd's StartLimitBurst default ...
RESTART_INTERVAL = 10.0  # ... within StartLimitIntervalSec


# The run's templates (one per run of this process) and what they said of their children's ends.
_templates: dict[str, ForkClient] = {}
_templates_lock = threading.Lock()
_exit_statuses: dict[int, int] = {}
# The testnets this process supervises, by run: a sweep of their run stops their supervision
# before it kills their processes, or the supervisor would start the orchestrators again.
_supervising: dict[str, weakref.WeakSet[LocalBackend]] = {}


def _template(run: Run) -> ForkClient:
    """The run's template, started on first use (and again if it died)."""
    with _templates_lock:
        client = _templates.get(run.run_id)
        if client is None or not client.alive:
            env = {**os.environ, **run.run_tags(), "PYTHONUNBUFFERED": "1"}
            client = ForkClient.exec_server(
                f"harness template of run {run.run_id}",
                env,
                log=run.directory / "template.log",
                on_exit=_exit_statuses.__setitem__,
            )
            _templates[run.run_id] = client
        return client


def _close_template(run_id: str) -> None:
    with _templates_lock:
        client = _templates.pop(run_id, None)
    if client is not None:
        client.close()


@dataclass
class _Orchestrator:
    """An orchestrator this backend started: forked by the template, or exec'd (`popen`). A
    pidfd says when it has ended, whoever its parent is."""

    pid: int
    pidfd: int | None
    popen: subprocess.Popen[bytes] | None = None

    def ended(self, timeout: float = 0.0) -> bool:
        if self.pidfd is not None:
            readable, _, _ = select.select([self.pidfd], [], [], timeout)
            if not readable:
                return False
        if self.popen is not None:
            self.popen.wait()  # reap it: it has ended
        return True

    def status(self) -> str:
        if self.popen is not None and self.popen.returncode is not None:
            return f"returncode {self.popen.returncode}"
        status = _exit_statuses.pop(self.pid, None)
        return "status unknown" if status is None else describe(status)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


@dataclass
class _LocalNode:
    node_id: str
    ip: str
    data_dir: DataDir
    process: _Orchestrator | None = None
    sessions: set[int] = field(default_factory=set)  # of every orchestrator it had
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    wanted: bool = False  # whether the node should be running (the supervisor's view)
    restarts: deque[float] = field(default_factory=deque)
    partitioned: bool = False


SWEEP_ROUNDS = 3
"""How many times a sweep looks again for a run's processes after killing what it found."""


class LocalBackend(
    Backend, Pausable, Partitionable, Stoppable, Signallable, NodeFiles, PrometheusBeside
):
    """Nodes as process trees on loopback addresses."""

    name = "local"

    @classmethod
    def sweep(
        cls, doomed_run: Callable[[str], bool], testnet_id: str | None = None
    ) -> dict[str, int]:
        killed: dict[str, int] = {}
        for run_id in [run_id for run_id in _supervising if doomed_run(run_id)]:
            for backend in list(_supervising[run_id]):
                if testnet_id is None or backend.testnet_id == testnet_id:
                    backend.stop_supervising()
            if testnet_id is None:
                del _supervising[run_id]
        if testnet_id is None:
            for run_id in [run_id for run_id in _templates if doomed_run(run_id)]:
                _close_template(run_id)  # its run is ending: a template of ours goes quietly
        # Everything is signalled at once, so an orchestrator may see a program end before it
        # sees its own SIGTERM, and start it again: what a round started, the next one ends.
        for _ in range(SWEEP_ROUNDS):
            found = False
            for run_id, processes in tagged_processes().items():
                if not doomed_run(run_id):
                    continue
                if testnet_id is not None:
                    sessions = _recorded_sessions(run_id, testnet_id)
                    processes = [
                        p for p in processes if _belongs(p, sessions, {TESTNET_ID_ENV: testnet_id})
                    ]
                if processes:
                    found = True
                    count = kill_processes(processes)
                    killed[run_id] = killed.get(run_id, 0) + count
                    log.warning("swept %d process(es) left by run %s", count, run_id)
            if not found:
                break
        if testnet_id is None:  # a node's partition rules are healed when its testnet closes
            local_firewall.sweep_rules(doomed_run)
        return killed

    def lacks(self, capability: type) -> str | None:
        if capability is Partitionable:
            if shutil.which("iptables") is None:
                return "partitions on the local backend need iptables (Debian package iptables)"
            if os.geteuid() != 0:
                return "partitions on the local backend need root (iptables rules)"
        return super().lacks(capability)

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        super().__init__(run, testnet_id, directory, options)
        self._nodes: dict[str, _LocalNode] = {}
        self._blocks: list[str] = []
        self.gateway_port: int = Port.IC_GATEWAY
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"supervise-{testnet_id}", daemon=True
        )
        _supervising.setdefault(run.run_id, weakref.WeakSet()).add(self)

    def stop_supervising(self) -> None:
        """Restart no orchestrator from now on (the testnet is ending)."""
        self._closing.set()
        with self._lock:
            for local in self._nodes.values():
                local.wanted = False
        if self._supervisor.is_alive() and self._supervisor is not threading.current_thread():
            self._supervisor.join()

    def allocate(self, plan: Plan, registry_path: Path) -> Mapping[str, str]:
        global _warned_port_80
        addresses, self._blocks = local_addresses.claim_addresses(self.run.run_id, len(plan.nodes))
        ips: dict[str, str] = {}
        for node in plan.nodes:
            ip = addresses[node.index]
            ips[node.node_id] = ip
            self._nodes[node.node_id] = _LocalNode(node.node_id, ip, self.data_dir(node.node_id))
        if not local_addresses.port_80_allowed(addresses[0]):
            self.gateway_port = UNPRIVILEGED_IC_GATEWAY_PORT
            if not _warned_port_80:
                _warned_port_80 = True
                log.warning(
                    "binding port 80 is not permitted here (not root, no CAP_NET_BIND_SERVICE): "
                    "ic-gateway listens on %d instead; node.url(80) maps to it",
                    UNPRIVILEGED_IC_GATEWAY_PORT,
                )
        return ips

    def _node(self, node_id: str) -> _LocalNode:
        return self.known(self._nodes, node_id)

    def start_node(self, node: PlannedNode, registry_path: Path) -> None:
        local = self._node(node.node_id)
        with self._lock:
            if local.process is not None and not local.process.ended():
                raise HarnessError(f"node {node.node_id} is already running")
            local.data_dir.root.mkdir(parents=True, exist_ok=True)
            self._command(local, registry_path)
            self._spawn(local)
            local.wanted = True
            local.restarts.clear()
            self._start_supervising()

    def _command(self, local: _LocalNode, registry_path: Path) -> None:
        local.argv = self.orchestrator_arguments(
            local.node_id,
            str(registry_path),
            str(local.data_dir.root),
            local.ip,
            "--ic-gateway-port",
            str(self.gateway_port),
        )
        local.env = {
            **self.run.process_tags(self.testnet_id, local.node_id),
            "PYTHONUNBUFFERED": "1",
        }

    def _start_supervising(self) -> None:
        if not self._supervisor.is_alive() and not self._closing.is_set():
            self._supervisor.start()

    # Attaching (`Testnet.attach`): the orchestrators are found by their pid files.
    def state(self) -> dict[str, Any]:
        return {"gateway_port": self.gateway_port}

    def attach(
        self, plan: Plan, ips: Mapping[str, str], registry_path: Path, state: Mapping[str, Any]
    ) -> None:
        self.gateway_port = int(state.get("gateway_port", Port.IC_GATEWAY))
        with self._lock:
            for node in plan.nodes:
                local = _LocalNode(node.node_id, ips[node.node_id], self.data_dir(node.node_id))
                self._nodes[node.node_id] = local
                self._command(local, registry_path)
                self._adopt(local)
            self._start_supervising()

    def _adopt(self, local: _LocalNode) -> None:
        """Supervise the node's orchestrator as its pid file names it (started by another
        process, or again while this one stood aside)."""
        record = read_pid_file(local.data_dir.pid_file("orchestrator"))
        pid = record.pid if record is not None else None
        if local.process is not None and local.process.pid == pid:
            return
        try:
            alive = (
                record is not None
                and record.create_time is not None
                and (abs(psutil.Process(record.pid).create_time() - record.create_time) < 0.01)
            )
        except psutil.Error:
            alive = False
        if local.process is not None:
            local.process.close()
            local.process = None
        if alive and pid is not None:
            try:
                local.process = _Orchestrator(pid, os.pidfd_open(pid))
                local.sessions.add(pid)
            except ProcessLookupError:
                local.process = None
        # One that is gone stays stopped, as found: a reset starts it (`Testnet.reset`).
        local.wanted = local.process is not None
        local.restarts.clear()

    def take_back(self) -> None:
        with self._lock:
            for local in self._nodes.values():
                self._adopt(local)

    def detach(self) -> None:
        """Stop supervising (the orchestrators run on) and hang up this process's template of
        the testnet's run, unless another attached testnet of the run still uses it."""
        self.stop_supervising()
        others = _supervising.get(self.run.run_id)
        if others is not None:
            others.discard(self)
            if not others:
                _close_template(self.run.run_id)

    def _spawn(self, local: _LocalNode) -> None:
        log_file = local.data_dir.orchestrator_log
        try:
            if self.options.spawn == "fork":
                argv = ("orchestrator", *local.argv)
                spawn = Spawn("orchestrator", argv, local.env, str(log_file), new_session=True)
                pid = _template(self.run).spawn(spawn)
                popen = None
            else:
                argv = (sys.executable, "-m", "harness.node.orchestrator", *local.argv)
                with log_file.open("ab") as out:
                    popen = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **local.env},
                        start_new_session=True,
                    )
                pid = popen.pid
        except (OSError, ConnectionError) as exc:
            raise NodeStartError(
                f"node {local.node_id}: cannot start the orchestrator: {exc}"
            ) from exc
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None  # gone already: `ended()` says so at once
        if local.process is not None:
            local.process.close()
        local.process = _Orchestrator(pid, pidfd, popen)
        local.sessions.add(pid)
        with contextlib.suppress(psutil.Error):
            created = psutil.Process(pid).create_time()
            write_pid_file(
                local.data_dir.pid_file("orchestrator"),
                PidRecord(pid, created, "orchestrator", argv),
            )

    def _supervise(self) -> None:
        """Restart=always for the orchestrators (see the module docstring)."""
        hold = HoldWatch(self.directory.parent)
        while not self._closing.wait(RESTART_DELAY):
            # A session attached to the testnet supervises it meanwhile (`holds`); after it
            # (it let go, or it died), the orchestrators it started are taken over.
            given_back = hold.poll()
            if given_back is None:
                continue
            if given_back:
                self.take_back()
            for local in list(self._nodes.values()):
                with self._lock:
                    process = local.process
                    if not local.wanted or process is None or not process.ended():
                        continue
                    now = time.monotonic()
                    while local.restarts and now - local.restarts[0] > RESTART_INTERVAL:
                        local.restarts.popleft()
                    if len(local.restarts) >= RESTART_BURST:
                        log.error(
                            "node %s: orchestrator exited %d times in %.0f s; not restarting it",
                            local.node_id, RESTART_BURST, RESTART_INTERVAL,
                        )  # fmt: skip
                        local.wanted = False
                        continue
                    local.restarts.append(now)
                    log.warning(
                        "node %s: orchestrator exited (%s); restarting it",
                        local.node_id, process.status(),
                    )  # fmt: skip
                    try:
                        self._spawn(local)
                    except NodeStartError as exc:
                        log.error("%s", exc)

    def stop_node(self, node_id: str) -> None:
        local = self._node(node_id)
        with self._lock:
            local.wanted = False
        self.resume_node(node_id)  # a stopped process cannot act on SIGTERM
        self._stop(local)

    def node_running(self, node_id: str) -> bool:
        local = self._node(node_id)
        with self._lock:
            return local.wanted or (local.process is not None and not local.process.ended())

    def pause_node(self, node_id: str) -> None:
        self._signal_node(self._node(node_id), signal.SIGSTOP)

    def resume_node(self, node_id: str) -> None:
        self._signal_node(self._node(node_id), signal.SIGCONT)

    def _signal_node(self, local: _LocalNode, sig: int) -> None:
        for process in self._tagged(local.node_id):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                process.send_signal(sig)

    def partition_node(self, node_id: str) -> None:
        local = self._node(node_id)
        local_firewall.isolate(local.ip, self.run.run_id, node_id)
        local.partitioned = True

    def heal_node(self, node_id: str) -> None:
        local = self._node(node_id)
        local_firewall.heal(local.ip, self.run.run_id, node_id)
        local.partitioned = False

    def _stop(self, local: _LocalNode, leftovers: bool = True) -> None:
        """Stop the node's orchestrator (SIGTERM, SIGKILL if it ignores it), then, with
        `leftovers`, what is left in its sessions (one scan of every process: a teardown
        does it once for all its nodes instead)."""
        process = local.process
        if process is None:
            return
        if not process.ended():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            # The orchestrator stops its programs, each within the grace period.
            if not process.ended(timeout=2 * self.options.stop_grace_period + 5):
                log.warning("node %s: orchestrator ignored SIGTERM; killing it", local.node_id)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.ended(timeout=10)
        process.close()
        local.process = None
        # Whatever is still in the node's sessions (e.g. programs of an orchestrator that was
        # killed -9) goes too.
        left = self._tagged(local.node_id) if leftovers else []
        if left:
            kill_processes(left, grace=self.options.stop_grace_period)

    def _tagged(self, node_id: str | None = None) -> list[psutil.Process]:
        """Live processes of this testnet (of one node): the run's processes in the sessions
        of its orchestrators (or, exec'd, tagged with the testnet and node)."""
        nodes = [self._node(node_id)] if node_id is not None else list(self._nodes.values())
        sessions = {session for local in nodes for session in local.sessions}
        tags = {TESTNET_ID_ENV: self.testnet_id}
        if node_id is not None:
            tags[NODE_ID_ENV] = node_id
        return [
            process
            for process in tagged_processes().get(self.run.run_id, [])
            if _belongs(process, sessions, tags)
        ]

    def process_pid(self, node_id: str, process: str) -> int | None:
        """The pid of one of the node's programs, from the orchestrator's pid files."""
        local = self._node(node_id)
        if process == "orchestrator":
            if local.process is None or local.process.ended():
                return None
            return local.process.pid
        record = read_pid_file(local.data_dir.pid_file(process))
        if record is None or record.create_time is None:
            return None
        try:  # the pid is the program's only while the process has its create time
            if abs(psutil.Process(record.pid).create_time() - record.create_time) > 0.01:
                return None
        except psutil.Error:
            return None
        return record.pid

    def kill_process(self, node_id: str, process: str, sig: int = signal.SIGKILL) -> int:
        pid = self.process_pid(node_id, process)
        if pid is None:
            raise HarnessError(f"node {node_id}: no {process} process is running")
        os.kill(pid, sig)
        return pid

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        ip = self._node(node_id).ip
        return ip, self.gateway_port if port == Port.IC_GATEWAY else port

    def write_node_file(self, node_id: str, relative: str, data: bytes | None) -> None:
        write_file(self.data_dir(node_id).root / relative, data)

    def prometheus_server(self, directory: Path) -> ProcessServer:
        """A process on a loopback block of its own (claimed like the nodes', released at
        teardown), whose first address has every node port free."""
        prefix = local_addresses.claim_block(self.run.run_id)
        self._blocks.append(prefix)
        return ProcessServer(self.run, self.testnet_id, directory, f"{prefix}.2")

    def scrape_address(self, node_id: str, port: int) -> tuple[str, int]:
        return self.endpoint(node_id, port)

    def teardown(self) -> None:
        self.stop_supervising()
        for local in self._nodes.values():
            if local.partitioned:
                self.heal_node(local.node_id)
        for process in self._tagged():  # one scan of every process for all the nodes
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        for local in self._nodes.values():
            if local.process is not None and not local.process.ended():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(local.process.pid, signal.SIGTERM)
        for local in self._nodes.values():
            self._stop(local, leftovers=False)
        leftovers = self._tagged()
        if leftovers:
            log.warning(
                "testnet %s: %d process(es) outlived their orchestrator; killing them",
                self.testnet_id,
                len(leftovers),
            )
            kill_processes(leftovers, grace=self.options.stop_grace_period)
        for prefix in self._blocks:
            local_addresses.release_block(prefix)
        self._blocks = []


def _environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except (psutil.Error, OSError):
        return {}


def _belongs(process: psutil.Process, sessions: set[int], tags: dict[str, str]) -> bool:
    """Whether a process of the run is in one of `sessions` or carries `tags`."""
    try:
        if os.getsid(process.pid) in sessions:
            return True
    except ProcessLookupError:
        return False
    env = _environ(process)
    return all(env.get(key) == value for key, value in tags.items())


def _recorded_sessions(run_id: str, testnet_id: str) -> set[int]:
    """The sessions of a testnet's orchestrators, from their pid files (for a sweep by a
    process that did not start them)."""
    nodes = state_root() / "runs" / run_id / testnet_id / "nodes"
    sessions = set()
    for node in nodes.glob("*") if nodes.is_dir() else ():
        record = read_pid_file(DataDir(node).pid_file("orchestrator"))
        if record is not None:
            sessions.add(record.pid)
    return sessions
