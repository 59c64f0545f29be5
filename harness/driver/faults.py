"""Faults a test injects into a testnet's nodes: each an object that applies itself through the
backend capability it needs (`harness.driver.backends.capabilities`) and undoes itself.

    testnet.inject(Pause("subnet-1-node-0"))  # or node.pause()
    testnet.heal_all()                         # the faults in force, undone in reverse order

`Testnet` keeps the faults in force and heals, in reverse order, whatever a test left (the pytest
plugin does so after every test, before the metric checks). A fault whose capability the backend
lacks, or cannot use here (partitions without root, say), raises `CapabilityMissing`; the plugin
skips the test with that reason.

To add a fault: its class here (the capability it needs, `apply`, `undo`) and, where no backend
can do it yet, a capability protocol and its methods in the backends that can.
"""

from __future__ import annotations

import abc
import json
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from harness.driver.backends.capabilities import (
    NodeFiles,
    Partitionable,
    Pausable,
    Signallable,
    Stoppable,
)
from harness.driver.errors import CapabilityMissing, HarnessError
from harness.driver.topology import PlannedNode
from harness.node.layout import REPLICA_FAULTS_FILE
from harness.node.replica.faults import FaultsError, parse_faults

if TYPE_CHECKING:
    from harness.driver.backends.base import Backend

T = TypeVar("T")


@dataclass(frozen=True)
class FaultTarget:
    """What a fault acts on: the testnet's backend, the node's plan and the registry's path."""

    backend: Backend
    node: PlannedNode
    registry_path: Path

    def capable(self, capability: type[T]) -> T:
        """The backend as `capability`; `CapabilityMissing` with the reason it lacks it."""
        reason = self.backend.lacks(capability)
        if reason is not None:
            raise CapabilityMissing(reason)
        return cast(T, self.backend)


@dataclass(frozen=True)
class Fault(abc.ABC):
    """One fault on one node."""

    node_id: str

    lasting: ClassVar[bool] = True
    """In force until undone (a signal is not: the node's supervisor handles its effect)."""
    survives_restart: ClassVar[bool] = False
    """Still in force after the node is stopped and started (a file in its data directory)."""
    stops_node: ClassVar[bool] = False
    """Applying it stops the node (its faults that a restart ends are undone first); undoing it
    starts the node anew, and the testnet waits until the node is healthy."""

    @abc.abstractmethod
    def apply(self, target: FaultTarget) -> int | None:
        """Bring the fault about; return the pid it acted on, where it acted on a process."""

    def undo(self, target: FaultTarget) -> None:
        """Undo what `apply` did (nothing, for a fault that does not last)."""
        return None

    @property
    def program(self) -> str | None:
        """The node program it acts on, if it acts on one (for the test's events)."""
        return None

    def __str__(self) -> str:
        return f"{type(self).__name__.lower()} of {self.node_id}"


@dataclass(frozen=True)
class Pause(Fault):
    """Every process of the node frozen (SIGSTOP, docker pause): it keeps its state and
    answers nothing."""

    def apply(self, target: FaultTarget) -> None:
        target.capable(Pausable).pause_node(self.node_id)

    def undo(self, target: FaultTarget) -> None:
        target.capable(Pausable).resume_node(self.node_id)


@dataclass(frozen=True)
class Partition(Fault):
    """The node cut off from every other node and from the harness."""

    def apply(self, target: FaultTarget) -> None:
        target.capable(Partitionable).partition_node(self.node_id)

    def undo(self, target: FaultTarget) -> None:
        target.capable(Partitionable).heal_node(self.node_id)


@dataclass(frozen=True)
class Stop(Fault):
    """The node stopped gracefully (its orchestrator stops its programs first); undone by
    starting it again. Stopping undoes the node's faults that a restart would end anyway."""

    stops_node: ClassVar[bool] = True

    def apply(self, target: FaultTarget) -> None:
        target.capable(Stoppable).stop_node(self.node_id)

    def undo(self, target: FaultTarget) -> None:
        if not target.capable(Stoppable).node_running(self.node_id):  # started meanwhile
            target.backend.start_node(target.node, target.registry_path)


@dataclass(frozen=True)
class ReplicaFaults(Fault):
    """The replica's fault knobs (`fail_at_start`, `unhealthy`, `delay_seconds`,
    `critical_errors`; see `harness.node.replica`), written to its data directory. Checked as
    the replica checks them: an unknown knob or a bad value is a `HarnessError` here, not a
    file the replica would ignore (a test that silently runs without its fault)."""

    knobs: Mapping[str, Any] = field(default_factory=dict)

    survives_restart: ClassVar[bool] = True

    def __post_init__(self) -> None:
        try:
            parse_faults(json.dumps(dict(self.knobs)))
        except (FaultsError, TypeError, ValueError) as exc:
            raise HarnessError(f"replica fault knobs of {self.node_id}: {exc}") from None

    @property
    def program(self) -> str:
        return "replica"

    def __str__(self) -> str:
        knobs = ", ".join(f"{name}={value!r}" for name, value in dict(self.knobs).items())
        return f"replica fault knobs ({knobs or 'none'}) of {self.node_id}"

    def apply(self, target: FaultTarget) -> None:
        data = json.dumps(dict(self.knobs)).encode()
        target.capable(NodeFiles).write_node_file(self.node_id, REPLICA_FAULTS_FILE, data)

    def undo(self, target: FaultTarget) -> None:
        target.capable(NodeFiles).write_node_file(self.node_id, REPLICA_FAULTS_FILE, None)


@dataclass(frozen=True)
class Signal(Fault):
    """A signal (default SIGKILL) to one program of the node (`orchestrator`, `replica`,
    `ic-gateway`, `ic-boundary`); its supervisor decides what follows."""

    process: str = "replica"
    sig: int = signal.SIGKILL

    lasting: ClassVar[bool] = False

    def apply(self, target: FaultTarget) -> int:
        return target.capable(Signallable).kill_process(self.node_id, self.process, self.sig)

    @property
    def program(self) -> str:
        return self.process

    def __str__(self) -> str:
        name = signal.Signals(self.sig).name
        return f"{name} to the {self.process} of {self.node_id}"


# The faults in force are kept in the testnet's directory as JSON, so that a session attached
# to the testnet later (`Testnet.attach`) heals what an earlier one left.
def fault_document(fault: Fault) -> dict[str, Any]:
    """A lasting fault as a JSON-ready document (`fault_from_document` reads it back)."""
    fields = dict(vars(fault))
    if isinstance(fault, ReplicaFaults):
        fields["knobs"] = dict(fault.knobs)
    return {"kind": type(fault).__name__, **fields}


def fault_from_document(document: Mapping[str, Any]) -> Fault:
    """The fault of a `fault_document`; `HarnessError` naming what is wrong with it."""
    kinds = {kind.__name__: kind for kind in (Pause, Partition, Stop, ReplicaFaults, Signal)}
    fields = dict(document)
    kind = kinds.get(str(fields.pop("kind", "")))
    if kind is None:
        raise HarnessError(f"not a fault: {json.dumps(document)}; kinds: {sorted(kinds)}")
    try:
        return kind(**fields)
    except TypeError as exc:
        raise HarnessError(f"not a {kind.__name__} fault: {json.dumps(document)}: {exc}") from None
