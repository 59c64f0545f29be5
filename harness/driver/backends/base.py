"""The one interface every backend implements; tests never see which backend runs them."""

from __future__ import annotations

import abc
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.driver.errors import BackendUnavailable, HarnessError
from harness.driver.logfiles import read_file
from harness.driver.run import Run
from harness.driver.topology import Plan, PlannedNode


@dataclass(frozen=True)
class BackendOptions:
    """Settings every backend understands."""

    stop_grace_period: float = 3.0
    registry_poll_interval: float = 0.1
    check_interval: float = 10.0


class Backend(abc.ABC):
    """Runs the nodes of one testnet."""

    name: str = "?"
    parallel_starts: int = 8
    """How many `start_node` calls `Testnet.start` makes at once; each must be thread-safe."""

    def __init__(self, run: Run, testnet_id: str, directory: Path, options: BackendOptions):
        self.run = run
        self.testnet_id = testnet_id
        self.directory = directory
        self.options = options

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
            "--metrics-listen-addr", f"{listen_ip}:9091",
            "--dashboard-listen-addr", f"{listen_ip}:7070",
            "--stop-grace-period", str(self.options.stop_grace_period),
            "--registry-poll-interval", str(self.options.registry_poll_interval),
            "--check-interval", str(self.options.check_interval),
            *extra,
        ]  # fmt: skip

    def data_dir(self, node_id: str) -> Path:
        """The node's data directory as the harness sees it (logs, pid files, fault knobs)."""
        return self.directory / node_id

    def write_node_file(self, node_id: str, relative: str, data: bytes | None) -> None:
        """Replace (atomically) or, with None, remove a file in the node's data dir, as the
        node's programs see it; here: in `data_dir()`, which the node shares."""
        path = self.data_dir(node_id) / relative
        if data is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_bytes(data)
        staging.replace(path)

    @abc.abstractmethod
    def allocate(self, plan: Plan) -> Mapping[str, str]:
        """Reserve an address for every node; return node id -> IP written to the registry."""

    @abc.abstractmethod
    def start_node(self, node: PlannedNode, registry_path: Path) -> None:
        """Start the node's orchestrator (which starts its programs from the registry)."""

    @abc.abstractmethod
    def stop_node(self, node_id: str) -> None:
        """Stop the node gracefully (SIGTERM to its orchestrator, escalating). Until then, an
        orchestrator that dies is started again, as systemd's `Restart=always` would."""

    @abc.abstractmethod
    def pause_node(self, node_id: str) -> None:
        """Freeze every process of the node; it keeps its state but answers nothing."""

    @abc.abstractmethod
    def resume_node(self, node_id: str) -> None:
        """Undo `pause_node`; a no-op for a node that is not paused."""

    @abc.abstractmethod
    def partition_node(self, node_id: str) -> None:
        """Cut the node off: nothing reaches it and it reaches nothing (the harness included)."""

    @abc.abstractmethod
    def heal_node(self, node_id: str) -> None:
        """Undo `partition_node`; a no-op for a node that is not partitioned."""

    @abc.abstractmethod
    def kill_process(self, node_id: str, process: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to one program of the node (`orchestrator`, `replica`, `ic-gateway`,
        `ic-boundary`); return its pid. Raise `HarnessError` if it is not running."""

    @abc.abstractmethod
    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        """Where the harness reaches `port` of the node (host, port)."""

    # Logs. A backend made for a testnet another process started (`harness logs`, through
    # `TestnetEntry.backend()`) reads them too: nothing here needs the state of the backend
    # that started the nodes.
    def log_names(self, node_id: str) -> list[str]:
        """The node's programs that have a log: `orchestrator` first, then those that ran."""
        logs = self.data_dir(node_id) / "logs"
        names = sorted(path.stem for path in logs.glob("*.log")) if logs.is_dir() else []
        return ["orchestrator", *names]

    def read_log(self, node_id: str, process: str, follow: bool = False) -> Iterator[bytes]:
        """The log of one of the node's programs (one of `log_names`) from its start; with
        `follow`, then what is appended, until the testnet is removed (or the caller stops)."""
        name = "orchestrator.log" if process == "orchestrator" else f"logs/{process}.log"
        path = self.data_dir(node_id) / name
        if not path.is_file():
            raise self.no_log(node_id, process)
        return read_file(path, follow)

    def no_log(self, node_id: str, process: str) -> HarnessError:
        return HarnessError(
            f"node {node_id} of testnet {self.testnet_id} has no log of {process!r}; "
            f"logs: {', '.join(self.log_names(node_id))}"
        )

    def collect_logs(self, node_id: str, destination: Path) -> None:
        """Copy every log of the node's programs into `destination` (`<program>.log`)."""
        destination.mkdir(parents=True, exist_ok=True)
        for process in self.log_names(node_id):
            try:
                content = b"".join(self.read_log(node_id, process))
            except HarnessError:
                continue  # a node that never started has no orchestrator log yet
            (destination / f"{process}.log").write_bytes(content)

    @abc.abstractmethod
    def teardown(self) -> None:
        """Stop every node and release everything; safe to call twice."""


_BACKENDS: dict[str, Callable[[], type[Backend]]] = {}


def register_backend(name: str, loader: Callable[[], type[Backend]]) -> None:
    _BACKENDS[name] = loader


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> type[Backend]:
    """The backend class called `name`; imported lazily so an unused backend costs nothing."""
    try:
        loader = _BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown backend {name!r}; available: {', '.join(backend_names())}"
        ) from None
    return loader()


def _local() -> type[Backend]:
    from harness.driver.backends.local import LocalBackend

    return LocalBackend


def _docker() -> type[Backend]:
    from harness.driver.backends.docker import DockerBackend

    return DockerBackend


def _swarm() -> type[Backend]:
    from harness.driver.backends.swarm import SwarmBackend

    return SwarmBackend


register_backend("local", _local)
register_backend("docker", _docker)
register_backend("swarm", _swarm)
