"""The `Process`es of the node programs the orchestrator runs: replica, ic-gateway and
ic-boundary: each one's static config (`configure`, from the orchestrator's flags), its
arguments (`args_for`, from the registry) and what restarts it.

Which programs there are, and when each runs, their descriptions say
(`harness.node.catalog`); `process_specs()` pairs every supervised description with the
`Process` class it names, and the orchestrator makes a manager, a runner, metric labels, a pid
file and a dashboard line for each.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Generic

from harness.node.catalog import IC_GATEWAY_DOMAIN, supervised
from harness.node.description import Backoff, DescriptionError, Program
from harness.node.layout import DataDir, Port
from harness.node.listen import ListenAddress
from harness.node.orchestrator.args import OrchestratorConfig
from harness.node.orchestrator.errors import ProcessBuildError
from harness.node.orchestrator.process import (
    A,
    Assignment,
    C,
    KeepRunning,
    LaunchSpec,
    Process,
    ProcessConfig,
    Restart,
    RestartDecision,
    changed_keys,
)


def _http_url(ip: str, port: int) -> str:
    return f"http://{ListenAddress(ip, port)}"


# ----------------------------------------------------------------------------------- replica
@dataclass(frozen=True)
class ReplicaConfig(ProcessConfig):
    node_id: str
    data_dir: Path
    root_key_file: Path | None = None


@dataclass(frozen=True)
class ReplicaArgs:
    version: str
    subnet_id: str
    ip: str
    http_port: int = Port.REPLICA_HTTP
    metrics_port: int = Port.REPLICA_METRICS


class ReplicaProcess(Process[ReplicaConfig, ReplicaArgs]):
    """The replica: serves the node's public API while the node is in a subnet."""

    NAME = "replica"

    @classmethod
    def configure(cls, flags: OrchestratorConfig) -> ReplicaConfig:
        return ReplicaConfig(
            flags.ic_binary_directory, flags.node_id, flags.data_dir, flags.root_key_file
        )

    @classmethod
    def args_for(cls, assignment: Assignment) -> ReplicaArgs:
        node = assignment.node
        return ReplicaArgs(
            assignment.version,
            assignment.subnet_id or "",
            node.ip,
            node.http_port,
            node.metrics_port,
        )

    @property
    def version(self) -> str:
        return self.args.version

    def validate(self) -> None:
        if not self.args.version or not self.args.subnet_id or not self.args.ip:
            raise ProcessBuildError(f"replica needs a version, a subnet id and an IP: {self.args}")

    def arguments(self) -> list[str]:
        args = [
            "--replica-version", self.args.version,
            "--node-id", self.config.node_id,
            "--subnet-id", self.args.subnet_id,
            "--http-listen", str(ListenAddress(self.args.ip, self.args.http_port)),
            "--metrics-listen", str(ListenAddress(self.args.ip, self.args.metrics_port)),
            "--faults-file", str(DataDir(self.config.data_dir).replica_faults),
        ]  # fmt: skip
        if self.config.root_key_file is not None:
            args += ["--root-key-file", str(self.config.root_key_file)]
        return args

    def restart_decision(self, args: ReplicaArgs) -> RestartDecision:
        old = self.args
        if args.version != old.version:
            return Restart(f"replica version changed from {old.version} to {args.version}")
        if args.subnet_id != old.subnet_id:
            return Restart(f"the node moved from subnet {old.subnet_id} to subnet {args.subnet_id}")
        if (args.ip, args.http_port, args.metrics_port) != (
            old.ip,
            old.http_port,
            old.metrics_port,
        ):
            return Restart("the node's IP or ports changed in its registry record")
        return KeepRunning()


# -------------------------------------------------------------------------------- ic-gateway
@dataclass(frozen=True)
class IcGatewayConfig(ProcessConfig):
    env_file: Mapping[str, str]
    port: int = Port.IC_GATEWAY
    domain: str = IC_GATEWAY_DOMAIN


@dataclass(frozen=True)
class IcGatewayArgs:
    version: str  # the replica version: the gateway ships with it
    ip: str
    replica_http_port: int = Port.REPLICA_HTTP
    node_domain: str | None = None


class IcGatewayProcess(Process[IcGatewayConfig, IcGatewayArgs]):
    """The ic-gateway side-car of cloud-engine nodes: port 80 in front of the local replica."""

    NAME = "ic-gateway"

    @classmethod
    def configure(cls, flags: OrchestratorConfig) -> IcGatewayConfig:
        return IcGatewayConfig(
            flags.ic_binary_directory,
            flags.ic_gateway_env,
            flags.ic_gateway_port,
            flags.ic_gateway_domain,
        )

    @classmethod
    def args_for(cls, assignment: Assignment) -> IcGatewayArgs:
        node = assignment.node
        return IcGatewayArgs(assignment.version, node.ip, node.http_port, node.domain)

    @property
    def version(self) -> str:
        return self.args.version

    def arguments(self) -> list[str]:
        return []

    def environment(self) -> dict[str, str]:
        domains = [self.config.domain]
        if self.args.node_domain and self.args.node_domain != self.config.domain:
            domains.append(self.args.node_domain)
        return {
            **self.config.env_file,
            "LISTEN_PLAIN": str(ListenAddress(self.args.ip, self.config.port)),
            "IC_URL": _http_url(self.args.ip, self.args.replica_http_port),
            "DOMAIN": ",".join(domains),
            "METRICS_LISTEN": str(ListenAddress(self.args.ip, Port.IC_GATEWAY_METRICS)),
        }

    def restart_decision(self, args: IcGatewayArgs) -> RestartDecision:
        if args.version != self.args.version:
            return Restart(f"version changed from {self.args.version} to {args.version}")
        changed = changed_keys(self.environment(), type(self)(self.config, args).environment())
        if changed:
            return Restart(f"its environment changed ({', '.join(changed)})")
        return KeepRunning()


# ------------------------------------------------------------------------------- ic-boundary
@dataclass(frozen=True)
class IcBoundaryConfig(ProcessConfig):
    env_file: Mapping[str, str]
    registry_local_store: Path | None
    registry_url: str | None = None


@dataclass(frozen=True)
class IcBoundaryArgs:
    version: str  # the API boundary node version from the registry
    domain: str
    ip: str


class IcBoundaryProcess(Process[IcBoundaryConfig, IcBoundaryArgs]):
    """ic-boundary: the API boundary node's entry point (443, metrics 9324)."""

    NAME = "ic-boundary"

    @classmethod
    def configure(cls, flags: OrchestratorConfig) -> IcBoundaryConfig:
        return IcBoundaryConfig(
            flags.ic_binary_directory,
            flags.ic_boundary_env,
            flags.registry_local_store,
            flags.registry_url,
        )

    @classmethod
    def args_for(cls, assignment: Assignment) -> IcBoundaryArgs:
        node = assignment.node
        return IcBoundaryArgs(assignment.version, node.domain or "", node.ip)

    @property
    def version(self) -> str:
        return self.args.version

    def validate(self) -> None:
        if not self.args.domain:
            raise ProcessBuildError("ic-boundary needs the node's domain as its TLS hostname")

    def arguments(self) -> list[str]:
        return ["--tls-hostname", self.args.domain, "--crypto-config", "{}"]

    def environment(self) -> dict[str, str]:
        return {
            **self.config.env_file,
            "LISTEN_HTTP_ADDR": str(ListenAddress(self.args.ip, Port.IC_BOUNDARY)),
            "OBS_METRICS_ADDR": str(ListenAddress(self.args.ip, Port.IC_BOUNDARY_METRICS)),
            **(
                {"REGISTRY_URL": self.config.registry_url}
                if self.config.registry_url is not None
                else {"REGISTRY_LOCAL_STORE_PATH": str(self.config.registry_local_store)}
            ),
        }

    def restart_decision(self, args: IcBoundaryArgs) -> RestartDecision:
        if args.domain != self.args.domain:
            return Restart(f"domain name changed from {self.args.domain} to {args.domain}")
        if args.ip != self.args.ip:
            return Restart(f"the node's IP changed from {self.args.ip} to {args.ip}")
        return KeepRunning()


# ------------------------------------------------------------------ a program's templates
def _address_of(host: str) -> str:
    """`host` as an IP (the registry names swarm nodes by host name, which a server such as
    busybox's httpd cannot bind); `host` itself when it is one or does not resolve."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
    except OSError:
        return host


@dataclass(frozen=True)
class DescribedConfig(ProcessConfig):
    node_id: str
    data_dir: Path


@dataclass(frozen=True)
class DescribedArgs:
    version: str
    subnet_id: str
    ip: str
    domain: str


class DescribedProcess(Process[DescribedConfig, DescribedArgs]):
    """A program whose description has no `Process` of its own: its command line and
    environment are its description's templates filled in from the registry
    (`Program.context`), and it is restarted when they come out different. A subclass per
    program names it (`process_type_of`)."""

    PROGRAM: ClassVar[Program]

    @classmethod
    def configure(cls, flags: OrchestratorConfig) -> DescribedConfig:
        return DescribedConfig(flags.ic_binary_directory, flags.node_id, flags.data_dir)

    @classmethod
    def args_for(cls, assignment: Assignment) -> DescribedArgs:
        node = assignment.node
        return DescribedArgs(
            assignment.version, assignment.subnet_id or "", node.ip, node.domain or ""
        )

    @property
    def version(self) -> str:
        return self.args.version

    @functools.cached_property
    def _context(self) -> dict[str, object]:
        args, config = self.args, self.config
        return self.PROGRAM.context(
            config.node_id,
            args.ip,
            args.version,
            args.subnet_id,
            args.domain,
            config.data_dir,
            _address_of(args.ip),
        )

    def arguments(self) -> list[str]:
        return self.PROGRAM.fill(self.PROGRAM.arguments, self._context)

    def environment(self) -> dict[str, str]:
        context = self._context
        return {k: v.format(**context) for k, v in self.PROGRAM.environment.items()}

    def launch_spec(self) -> LaunchSpec:
        program = self.PROGRAM
        if program.forkable:
            return super().launch_spec()
        argv = program.fill(program.command, self._context)
        return LaunchSpec(self.NAME, tuple(argv), MappingProxyType(self.environment()), False)

    def restart_decision(self, args: DescribedArgs) -> RestartDecision:
        if args.version != self.args.version:
            return Restart(f"version changed from {self.args.version} to {args.version}")
        old, new = self.launch_spec(), type(self)(self.config, args).launch_spec()
        if old.argv != new.argv:
            return Restart("its command line changed")
        changed = sorted(
            k for k in old.env.keys() | new.env.keys() if old.env.get(k) != new.env.get(k)
        )
        if changed:
            return Restart(f"its environment changed ({', '.join(changed)})")  # names only
        return KeepRunning()


# ------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ProcessSpec(Generic[C, A]):
    """A program the orchestrator runs: its description and its `Process` type."""

    program: Program
    process_type: type[Process[C, A]]

    @property
    def name(self) -> str:
        return self.program.name

    def config(self, flags: OrchestratorConfig) -> C:
        return self.process_type.configure(flags)

    def stop_grace(self, flags: OrchestratorConfig) -> float:
        """Seconds between its SIGTERM and its SIGKILL: its own, else the orchestrator's."""
        grace = self.program.stop_grace
        return flags.stop_grace_period if grace is None else grace

    def backoff(self, default: Backoff) -> Backoff:
        """Its crash-loop backoff: its own, else the orchestrator's."""
        return self.program.backoff or default


def process_type_of(program: Program) -> type[Process[Any, Any]]:
    """The `Process` class a supervised program's description names; `DescriptionError` when
    it cannot be imported or is not a `Process` for a program of that name."""
    if not program.supervised:
        raise DescriptionError(f"program {program.name!r}: the orchestrator does not run it")
    target = program.process
    if target is None:
        described: type[Process[Any, Any]] = type(
            f"Described_{program.name.replace('-', '_')}",
            (DescribedProcess,),
            {"NAME": program.name, "PROGRAM": program, "__module__": __name__},
        )
        return described
    module, _, name = target.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DescriptionError(f"program {program.name!r}: process {target!r}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, Process)):
        raise DescriptionError(f"program {program.name!r}: process {target!r} is not a Process")
    if program.name != found.NAME:
        raise DescriptionError(
            f"program {program.name!r}: process {target!r} is called {found.NAME!r}"
        )
    process_type: type[Process[Any, Any]] = found
    return process_type


def process_specs(programs: Iterable[Program] | None = None) -> tuple[ProcessSpec[Any, Any], ...]:
    """The programs the orchestrator runs (default: every supervised one of the catalog), in
    start order, each with its `Process` type."""
    chosen = supervised() if programs is None else tuple(programs)
    return tuple(ProcessSpec(program, process_type_of(program)) for program in chosen)
