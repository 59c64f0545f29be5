"""The local backend (the default): every node is an orchestrator process on its own loopback
address 127.A.B.n, with the node programs under it, so each node's ports (`harness.node.layout`)
are real and distinct. No Docker needed.

The backend watches its orchestrators as systemd would with `Restart=always`: one that exits
while its node should run (killed -9, say) is started again after 0.1 s, at most 5 times in
10 s; the new orchestrator stops what the old one left before starting anything. Faults: a node
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
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.driver.backends import local_addresses, local_firewall
from harness.driver.backends.base import Backend, BackendOptions, write_file
from harness.driver.backends.capabilities import (
    NodeFiles,
    Partitionable,
    Pausable,
    Signallable,
    Stoppable,
)
from harness.driver.errors import HarnessError, NodeStartError
from harness.driver.run import (
    NODE_ID_ENV,
    TESTNET_ID_ENV,
    Run,
    kill_processes,
    tagged_processes,
)
from harness.driver.topology import Plan, PlannedNode
from harness.node.layout import UNPRIVILEGED_IC_GATEWAY_PORT, DataDir, Port, read_pid_file

log = logging.getLogger(__name__)

_warned_port_80 = False


RESTART_DELAY = 0.1  # systemd's RestartSec default
RESTART_BURST = 5  # systemd's StartLimitBurst default ...
RESTART_INTERVAL = 10.0  # ... within StartLimitIntervalSec


@dataclass
class _LocalNode:
    node_id: str
    ip: str
    data_dir: DataDir
    process: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    wanted: bool = False  # whether the node should be running (the supervisor's view)
    restarts: deque[float] = field(default_factory=deque)
    partitioned: bool = False


class LocalBackend(Backend, Pausable, Partitionable, Stoppable, Signallable, NodeFiles):
    """Nodes as process trees on loopback addresses."""

    name = "local"

    @classmethod
    def sweep(
        cls, doomed_run: Callable[[str], bool], testnet_id: str | None = None
    ) -> dict[str, int]:
        killed: dict[str, int] = {}
        for run_id, processes in tagged_processes().items():
            if not doomed_run(run_id):
                continue
            if testnet_id is not None:
                processes = [p for p in processes if _environ(p).get(TESTNET_ID_ENV) == testnet_id]
            if processes:
                killed[run_id] = kill_processes(processes)
                log.warning("swept %d process(es) left by run %s", killed[run_id], run_id)
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
        self._prefix: str | None = None
        self.gateway_port: int = Port.IC_GATEWAY
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"supervise-{testnet_id}", daemon=True
        )

    def allocate(self, plan: Plan) -> Mapping[str, str]:
        global _warned_port_80
        self._prefix = local_addresses.claim_block(self.run.run_id)
        ips: dict[str, str] = {}
        for node in plan.nodes:
            ip = f"{self._prefix}.{node.index + 2}"
            ips[node.node_id] = ip
            self._nodes[node.node_id] = _LocalNode(node.node_id, ip, self.data_dir(node.node_id))
        if not local_addresses.port_80_allowed(f"{self._prefix}.2"):
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
            if local.process is not None and local.process.poll() is None:
                raise HarnessError(f"node {node.node_id} is already running")
            local.data_dir.root.mkdir(parents=True, exist_ok=True)
            local.argv = [
                sys.executable,
                "-m",
                "harness.node.orchestrator",
                *self.orchestrator_arguments(
                    node.node_id,
                    str(registry_path),
                    str(local.data_dir.root),
                    local.ip,
                    "--ic-gateway-port",
                    str(self.gateway_port),
                ),
            ]
            local.env = {
                **os.environ,
                **self.run.process_tags(self.testnet_id, node.node_id),
                "PYTHONUNBUFFERED": "1",
            }
            self._spawn(local)
            local.wanted = True
            local.restarts.clear()
            if not self._supervisor.is_alive() and not self._closing.is_set():
                self._supervisor.start()

    def _spawn(self, local: _LocalNode) -> None:
        try:
            with local.data_dir.orchestrator_log.open("ab") as out:
                local.process = subprocess.Popen(
                    local.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=local.env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise NodeStartError(
                f"node {local.node_id}: cannot start the orchestrator: {exc}"
            ) from exc
        local.data_dir.pid_file("orchestrator").write_text(str(local.process.pid))

    def _supervise(self) -> None:
        """Restart=always for the orchestrators (see the module docstring)."""
        while not self._closing.wait(RESTART_DELAY):
            for local in list(self._nodes.values()):
                with self._lock:
                    process = local.process
                    if not local.wanted or process is None or process.poll() is None:
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
                        local.node_id, process.returncode,
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

    def _stop(self, local: _LocalNode) -> None:
        process = local.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                # The orchestrator stops its programs, each within the grace period.
                process.wait(timeout=2 * self.options.stop_grace_period + 5)
            except subprocess.TimeoutExpired:
                log.warning("node %s: orchestrator ignored SIGTERM; killing it", local.node_id)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        local.process = None
        # Whatever is still tagged with this node's data dir (e.g. programs of an orchestrator
        # that was killed -9) goes too.
        leftovers = self._tagged(local.node_id)
        if leftovers:
            kill_processes(leftovers, grace=self.options.stop_grace_period)

    def _tagged(self, node_id: str | None = None) -> list[psutil.Process]:
        """Live processes of this testnet (of one node), found by their environment tags."""
        found = []
        for process in tagged_processes().get(self.run.run_id, []):
            env = _environ(process)
            if env.get(TESTNET_ID_ENV) == self.testnet_id and (
                node_id is None or env.get(NODE_ID_ENV) == node_id
            ):
                found.append(process)
        return found

    def process_pid(self, node_id: str, process: str) -> int | None:
        """The pid of one of the node's programs, from the orchestrator's pid files."""
        local = self._node(node_id)
        if process == "orchestrator":
            if local.process is None or local.process.poll() is not None:
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

    def teardown(self) -> None:
        self._closing.set()
        with self._lock:
            for local in self._nodes.values():
                local.wanted = False
        if self._supervisor.is_alive():
            self._supervisor.join()
        for local in self._nodes.values():
            if local.partitioned:
                self.heal_node(local.node_id)
            self._signal_node(local, signal.SIGCONT)
        for local in self._nodes.values():
            if local.process is not None and local.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(local.process.pid, signal.SIGTERM)
        for local in self._nodes.values():
            self._stop(local)
        leftovers = self._tagged()
        if leftovers:
            log.warning(
                "testnet %s: %d process(es) outlived their orchestrator; killing them",
                self.testnet_id,
                len(leftovers),
            )
            kill_processes(leftovers, grace=self.options.stop_grace_period)
        if self._prefix is not None:
            local_addresses.release_block(self._prefix)
            self._prefix = None


def _environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except (psutil.Error, OSError):
        return {}
