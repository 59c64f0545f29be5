"""The `Process` abstraction: what a node program is and how to launch it.

A `Process` pairs static, node-local config (from flags: binary directory, env files, ...)
with arguments that change with the registry (version, subnet, domain, ...). `build()` makes
one; `launch_spec()` turns it into an argv list (never a shell line) and the env to add to the
inherited environment. Secrets go in env only: argv is world-readable in /proc/<pid>/cmdline.
`restart_decision(new_args)` says whether a running process must be restarted for new args.
Its description (`harness.node.description.Program`, in `harness.node.catalog`) names it and
says when it runs; `configure(flags)` makes its static config and `args_for(assignment)` its
arguments from what the registry says about the node (`Assignment`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Generic, Self, TypeVar

from harness.node.registry import NodeRecord, SubnetType

if TYPE_CHECKING:
    from harness.node.orchestrator.args import OrchestratorConfig


@dataclass(frozen=True)
class KeepRunning:
    """The running process fits the new arguments."""


@dataclass(frozen=True)
class Restart:
    """The running process must be replaced; `reason` is logged."""

    reason: str


RestartDecision = KeepRunning | Restart


@dataclass(frozen=True)
class ProcessConfig:
    """Static config every process has: where its binary lives."""

    ic_binary_directory: Path


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one program: argv (binary first) and env added to the inherited one."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    forkable: bool = True
    """Whether a fork server may run it (a Python program of `harness.node.programs`); else it
    is exec'd, whatever the spawn mode."""

    def __repr__(self) -> str:
        # Env values may be secrets: show only the keys.
        return f"LaunchSpec(name={self.name!r}, argv={list(self.argv)!r}, env={sorted(self.env)})"


@dataclass(frozen=True)
class Assignment:
    """What the registry says about the node, as its programs' arguments need it: the version
    to run (the subnet's replica version, or the API boundary node's), the subnet (none on an
    API boundary node), the node's record, and the launch gates open for it."""

    version: str
    subnet_id: str | None
    subnet_type: SubnetType | None
    node: NodeRecord
    open_gates: frozenset[str] = frozenset()


def changed_keys(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The names of the variables that differ between two environments (names only: values
    may be secrets)."""
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


C = TypeVar("C", bound=ProcessConfig)
A = TypeVar("A")


class Process(ABC, Generic[C, A]):
    """One node program built for a given config and arguments."""

    NAME: ClassVar[str]  # binary name under the binary directory, and metric label value

    def __init__(self, config: C, args: A) -> None:
        self.config = config
        self.args = args

    @classmethod
    @abstractmethod
    def configure(cls, flags: OrchestratorConfig) -> C:
        """Its static config, from the orchestrator's flags."""

    @classmethod
    @abstractmethod
    def args_for(cls, assignment: Assignment) -> A:
        """Its arguments, from what the registry says about the node."""

    @classmethod
    def build(cls, config: C, args: A) -> Self:
        """Build the process; raise `ProcessBuildError` when config/args do not fit."""
        process = cls(config, args)
        process.validate()
        return process

    def validate(self) -> None:
        """Check the arguments; raise `ProcessBuildError` naming what is wrong."""

    @property
    @abstractmethod
    def version(self) -> str:
        """The version this process runs."""

    @property
    def binary(self) -> Path:
        return self.config.ic_binary_directory / self.NAME

    @abstractmethod
    def arguments(self) -> list[str]:
        """Command-line arguments after the binary."""

    def environment(self) -> dict[str, str]:
        """Variables added to the inherited environment."""
        return {}

    @abstractmethod
    def restart_decision(self, args: A) -> RestartDecision:
        """Whether this (running) process must be restarted to run with `args`."""

    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec(
            self.NAME,
            (str(self.binary), *self.arguments()),
            MappingProxyType(self.environment()),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r}, args={self.args!r})"
