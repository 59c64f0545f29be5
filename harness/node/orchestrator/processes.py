"""The node programs the orchestrator runs: replica, ic-gateway and ic-boundary.

Each is a `Process` with its static config (from the orchestrator's flags) and its arguments
(from the registry). `PROCESS_TYPES` lists them all; runners, metric labels, pid files and the
dashboard are made for every entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.node.listen import ListenAddress
from harness.node.orchestrator.errors import ProcessBuildError
from harness.node.orchestrator.process import (
    KeepRunning,
    Process,
    ProcessConfig,
    Restart,
    RestartDecision,
)

IC_GATEWAY_METRICS_PORT = 9325
IC_BOUNDARY_HTTP_PORT = 443
IC_BOUNDARY_METRICS_PORT = 9324
REPLICA_FAULTS_FILE = "replica-faults.json"


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
    http_port: int = 8080
    metrics_port: int = 9090


class ReplicaProcess(Process[ReplicaConfig, ReplicaArgs]):
    """The replica: serves the node's public API while the node is in a subnet."""

    NAME = "replica"

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
            "--faults-file", str(self.config.data_dir / REPLICA_FAULTS_FILE),
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
    port: int = 80
    domain: str = "gateway.icp"


@dataclass(frozen=True)
class IcGatewayArgs:
    version: str  # the replica version: the gateway ships with it
    ip: str
    replica_http_port: int = 8080
    node_domain: str | None = None


class IcGatewayProcess(Process[IcGatewayConfig, IcGatewayArgs]):
    """The ic-gateway side-car of cloud-engine nodes: port 80 in front of the local replica."""

    NAME = "ic-gateway"

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
            "METRICS_LISTEN": str(ListenAddress(self.args.ip, IC_GATEWAY_METRICS_PORT)),
        }

    def restart_decision(self, args: IcGatewayArgs) -> RestartDecision:
        if args.version != self.args.version:
            return Restart(f"version changed from {self.args.version} to {args.version}")
        new_env = IcGatewayProcess(self.config, args).environment()
        old_env = self.environment()
        changed = sorted(
            k for k in new_env.keys() | old_env.keys() if new_env.get(k) != old_env.get(k)
        )
        if changed:
            # Key names only: values may be secrets.
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
            "LISTEN_HTTP_ADDR": str(ListenAddress(self.args.ip, IC_BOUNDARY_HTTP_PORT)),
            "OBS_METRICS_ADDR": str(ListenAddress(self.args.ip, IC_BOUNDARY_METRICS_PORT)),
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


# Every program the orchestrator may run, in start order.
PROCESS_TYPES: tuple[type[Process[Any, Any]], ...] = (
    ReplicaProcess,
    IcGatewayProcess,
    IcBoundaryProcess,
)
PROCESS_NAMES: tuple[str, ...] = tuple(p.NAME for p in PROCESS_TYPES)
