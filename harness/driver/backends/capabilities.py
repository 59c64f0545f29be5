"""What a backend can do to a node beyond running it: one small protocol per capability, as
Jepsen's DB protocols (`Kill`, `Pause`) are. A backend declares a capability by listing its
protocol among its bases (`class LocalBackend(Backend, Pausable, ...)`); a fault
(`harness.driver.faults`) asks for the one it needs, and a backend that lacks it, or cannot
use it here (partitions without root, say), makes the fault raise `CapabilityMissing`, which the
pytest plugin turns into a skip with that reason.

The first line of each protocol's docstring says what it lets a backend do (it ends up in that
message).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Pausable(Protocol):
    """freeze a node (every process of it) and thaw it again"""

    def pause_node(self, node_id: str) -> None:
        """Freeze every process of the node; it keeps its state but answers nothing."""

    def resume_node(self, node_id: str) -> None:
        """Undo `pause_node`; a no-op for a node that is not paused."""


@runtime_checkable
class Partitionable(Protocol):
    """cut a node off from every other node and from the harness, and heal it again"""

    def partition_node(self, node_id: str) -> None:
        """Cut the node off: nothing reaches it and it reaches nothing (the harness included)."""

    def heal_node(self, node_id: str) -> None:
        """Undo `partition_node`; a no-op for a node that is not partitioned."""


@runtime_checkable
class Stoppable(Protocol):
    """stop a node gracefully (`start_node` starts it again)"""

    def stop_node(self, node_id: str) -> None:
        """Stop the node gracefully (SIGTERM to its orchestrator, escalating). Until then, an
        orchestrator that dies is started again, as systemd's `Restart=always` would."""

    def node_running(self, node_id: str) -> bool:
        """Whether the node runs (its orchestrator, or what is about to start it again), as
        opposed to stopped (`stop_node`) or never started."""
        ...


@runtime_checkable
class Signallable(Protocol):
    """send a signal to one program of a node"""

    def kill_process(self, node_id: str, process: str, sig: int) -> int:
        """Send `sig` to one program of the node (`orchestrator`, `replica`, `ic-gateway`,
        `ic-boundary`); return its pid. Raise `HarnessError` if it is not running."""
        ...


@runtime_checkable
class NodeFiles(Protocol):
    """write files into a node's data directory (the replica's fault knobs)"""

    def write_node_file(self, node_id: str, relative: str, data: bytes | None) -> None:
        """Replace (atomically) or, with None, remove a file in the node's data dir, as the
        node's programs see it."""


class PrometheusServer(Protocol):
    """A Prometheus server as a backend runs it (`prometheus_servers`): not started yet."""

    listen: str
    """The address it is to listen on (`--web.listen-address`), as the server sees it."""

    def path(self, local: Path) -> str:
        """A path under the server's directory as the server sees it."""
        ...

    def start(self, arguments: list[str]) -> str:
        """Start `prometheus` with `arguments`, its output appended to `prometheus.log` in its
        directory; return the URL the harness reaches it at. `HarnessError` when it cannot."""
        ...

    def exit_status(self) -> int | None:
        """Its exit status once it has ended, else None."""
        ...

    def stop(self, grace: float) -> None:
        """SIGTERM, SIGKILL after `grace` seconds; nothing of it is left; safe to call twice."""
        ...


@runtime_checkable
class PrometheusBeside(Protocol):
    """run a Prometheus beside the testnet, on this machine, that scrapes every node"""

    def prometheus_server(self, directory: Path) -> PrometheusServer:
        """The testnet's Prometheus server, its files in `directory` (which exists); what it
        leaves is removed at teardown at the latest."""
        ...

    def scrape_address(self, node_id: str, port: int) -> tuple[str, int]:
        """Where that server reaches the node's `port` (a port as `endpoint()` takes it)."""
        ...


def what(capability: type) -> str:
    """What a capability lets a backend do, in words (its docstring's first line)."""
    return (capability.__doc__ or capability.__name__).strip().splitlines()[0]
