"""The one interface every backend implements; tests never see which backend runs them.

The core runs nodes: `allocate`, `start_node`, `endpoint`, `teardown`, the logs. What else a
backend can do to a node (pause it, cut it off, stop it, signal its programs, write its fault
knobs) it declares through the protocols of `harness.driver.backends.capabilities`.
Class-level hooks: `prepare()` (before a testnet starts: the node image, say) and `sweep()`
(what dead runs left behind). Backends are found through the `harness.backends` entry points
(`harness.driver.backend_registry`): a new one is its module plus one line in pyproject.toml.
"""

from __future__ import annotations

import abc
import dataclasses
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console

from harness.driver.backends.capabilities import what
from harness.driver.errors import HarnessError
from harness.driver.http import plain_client
from harness.driver.logfiles import read_file
from harness.driver.run import Run
from harness.driver.topology import Plan, PlannedNode
from harness.node.layout import DataDir, Port
from harness.node.orchestrator.args import SPAWN_MODES as SPAWN_MODES

N = TypeVar("N")


@dataclass(frozen=True)
class BackendOptions:
    """Settings every backend understands."""

    stop_grace_period: float = 3.0
    registry_poll_interval: float | None = None
    """How often orchestrators look for a new registry version, in seconds; None: by the
    testnet's size (`poll_interval_for`)."""
    check_interval: float = 10.0
    spawn: str = "fork"  # one of SPAWN_MODES
    """How node programs start: forked by a fork server that has imported them (`fork`), or
    exec'd from their console scripts (`exec`); see `harness.node.forkserver`."""
    binaries: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Programs run from another executable (`InternetComputer.with_binary`): program ->
    absolute path, the same inside a container (it is mounted there)."""

    def sized_for(self, nodes: int) -> BackendOptions:
        """These options with the registry poll interval of a testnet of `nodes` nodes."""
        if self.registry_poll_interval is not None:
            return self
        return dataclasses.replace(self, registry_poll_interval=poll_interval_for(nodes))


def poll_interval_for(nodes: int) -> float:
    """0.1 s (a registry change takes effect within ~0.1 s) up to 50 nodes; beyond, the
    interval grows with the nodes so that a whole testnet polls at most 500 times a second: an
    idle poll costs ~0.3 ms of CPU (an event loop's wakeup is dear in a sandboxed kernel), and
    500 orchestrators polling every 0.1 s kept more than a core busy doing nothing else."""
    return max(0.1, round(nodes / 500, 2))


class Backend(abc.ABC):
    """Runs the nodes of one testnet."""

    name: str = "?"
    parallel_starts: int = 8
    """How many `start_node` calls `Testnet.start` makes at once; each must be thread-safe."""

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        run.uses(self.name)  # before anything is made: the run's sweep asks this backend
        self.run = run
        self.testnet_id = testnet_id
        self.directory = directory
        self.options = options

    # Class-level hooks.
    @classmethod
    def prepare(cls, console: Console) -> None:
        """Get ready to start testnets (build an image, say), showing progress on `console`;
        called before a progress display starts."""
        return None  # nothing to get ready, by default

    @classmethod
    def sweep(
        cls, doomed_run: Callable[[str], bool], testnet_id: str | None = None
    ) -> dict[str, int]:
        """Remove what this backend made for runs of this state root for which
        `doomed_run(run_id)` (dead runs, every run, one run), or only for one testnet of them;
        return how many things per run id."""
        return {}

    def lacks(self, capability: type) -> str | None:
        """Why this backend cannot do what `capability` (a protocol of
        `harness.driver.backends.capabilities`) stands for here, or None when it can."""
        if isinstance(self, capability):
            return None
        return f"the {self.name} backend cannot {what(capability)}"

    def http_client(self) -> httpx.Client:
        """A client that reaches the nodes' endpoints (after `allocate()`)."""
        return plain_client()

    @property
    def http_proxy(self) -> str | None:
        """The SOCKS5 proxy (`socks5://HOST:PORT`) the harness reaches node endpoints through,
        if any (after `allocate()`); None where `endpoint()` is reachable directly."""
        return None

    def orchestrator_arguments(
        self, node_id: str, registry: str, data_dir: str, listen_ip: str, *extra: str
    ) -> list[str]:
        """The orchestrator's flags for a node: one place for what every backend passes.
        `registry` is a store directory or, with a scheme (`http://...`), a registry service."""
        return [
            "--node-id", node_id,
            "--registry-url" if "://" in registry else "--registry-local-store", registry,
            "--data-dir", data_dir,
            "--metrics-listen-addr", f"{listen_ip}:{Port.ORCHESTRATOR_METRICS}",
            "--dashboard-listen-addr", f"{listen_ip}:{Port.DASHBOARD}",
            "--stop-grace-period", str(self.options.stop_grace_period),
            "--registry-poll-interval", str(self.options.sized_for(0).registry_poll_interval),
            "--check-interval", str(self.options.check_interval),
            "--spawn", self.options.spawn,
            *(f"--program-binary={name}={path}" for name, path in self.options.binaries.items()),
            *extra,
        ]  # fmt: skip

    def known(self, nodes: Mapping[str, N], node_id: str) -> N:
        """`nodes[node_id]` of this backend's own records, or `HarnessError` naming the node."""
        try:
            return nodes[node_id]
        except KeyError:
            raise HarnessError(f"no node {node_id!r} in testnet {self.testnet_id}") from None

    def data_dir(self, node_id: str) -> DataDir:
        """The node's data directory as the harness sees it (logs, pid files, fault knobs)."""
        return DataDir(self.directory / node_id)

    @abc.abstractmethod
    def allocate(self, plan: Plan, registry_path: Path) -> Mapping[str, str]:
        """Reserve an address for every node and get ready to serve the registry at
        `registry_path` (empty yet: its first version is written after this) to them; return
        node id -> IP written to the registry."""

    @abc.abstractmethod
    def start_node(self, node: PlannedNode, registry_path: Path) -> None:
        """Start the node's orchestrator (which starts its programs from the registry)."""

    @abc.abstractmethod
    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        """Where the harness reaches `port` of the node (host, port)."""

    # Logs. A backend made for a testnet another process started (`harness logs`, through
    # `TestnetEntry.backend()`) reads them too: nothing here needs the state of the backend
    # that started the nodes.
    def log_names(self, node_id: str) -> list[str]:
        """The node's programs that have a log: `orchestrator` first, then those that ran."""
        logs = self.data_dir(node_id).logs
        names = sorted(path.stem for path in logs.glob("*.log")) if logs.is_dir() else []
        return ["orchestrator", *names]

    def read_log(self, node_id: str, process: str, follow: bool = False) -> Iterator[bytes]:
        """The log of one of the node's programs (one of `log_names`) from its start; with
        `follow`, then what is appended, until the testnet is removed (or the caller stops)."""
        data = self.data_dir(node_id)
        path = data.orchestrator_log if process == "orchestrator" else data.log(process)
        if not path.is_file():
            raise self.no_log(node_id, process)
        return read_file(path, follow)

    def read_logs(self, node_id: str) -> dict[str, bytes]:
        """Every log of the node's programs as it is now, by program (`log_names`)."""
        logs = {}
        for process in self.log_names(node_id):
            try:
                logs[process] = b"".join(self.read_log(node_id, process))
            except HarnessError:
                continue  # a node that never started has no orchestrator log yet
        return logs

    def log_sizes(self, node_id: str) -> dict[str, int]:
        """The size in bytes of each of the node's logs now (by program, as `collect_logs`
        names them), where a test's window in them starts (`harness.driver.logcheck`)."""
        data = self.data_dir(node_id)
        paths = [data.orchestrator_log, *(data.logs.glob("*.log") if data.logs.is_dir() else [])]
        sizes = {}
        for path in paths:
            try:
                sizes[path.stem] = path.stat().st_size
            except FileNotFoundError:
                continue
        return sizes

    def no_log(self, node_id: str, process: str) -> HarnessError:
        return HarnessError(
            f"node {node_id} of testnet {self.testnet_id} has no log of {process!r}; "
            f"logs: {', '.join(self.log_names(node_id))}"
        )

    def collect_logs(self, node_id: str, destination: Path) -> None:
        """Copy every log of the node's programs into `destination` (`<program>.log`), and the
        orchestrator's event journal (`events.jsonl`) if it wrote one."""
        destination.mkdir(parents=True, exist_ok=True)
        for process, content in self.read_logs(node_id).items():
            (destination / f"{process}.log").write_bytes(content)
        events = self.data_dir(node_id).events
        if events.is_file():
            shutil.copyfile(events, destination / events.name)

    @abc.abstractmethod
    def teardown(self) -> None:
        """Stop every node and release everything; safe to call twice."""

    # Attaching: another process takes over a testnet this backend started (`Testnet.attach`).
    @classmethod
    def can_attach(cls) -> bool:
        """Whether this backend can take over a testnet another process started (`attach`)."""
        return cls.attach is not Backend.attach

    def state(self) -> dict[str, Any]:
        """What a backend in another process needs, besides the plan and the nodes' addresses,
        to `attach()` to this testnet (JSON-ready; kept in the testnet's record)."""
        return {}

    def attach(
        self, plan: Plan, ips: Mapping[str, str], registry_path: Path, state: Mapping[str, Any]
    ) -> None:
        """Take over the running nodes of `plan` (their addresses `ips`, their registry at
        `registry_path`) that a backend of this kind started in another process, which left
        `state()`: from now on this backend acts on them, until `detach()`."""
        raise HarnessError(f"the {self.name} backend cannot attach to a running testnet")

    def detach(self) -> None:
        """Let go of the nodes `attach()` took over, leaving them running."""
        return None

    def take_back(self) -> None:
        """After a session attached to this backend's testnet let go of it: take over what it
        changed (nodes it started anew, say) before acting on the nodes again."""
        return None


def write_file(path: Path, data: bytes | None) -> None:
    """Replace a file atomically with `data` or, with None, remove it: what `write_node_file`
    does where the node's data directory is shared with the harness (local, docker)."""
    if data is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    staging.replace(path)
