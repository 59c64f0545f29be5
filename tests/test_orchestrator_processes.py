"""Unit tests of the node programs' argv/env and restart decisions (pure functions)."""

from __future__ import annotations

from pathlib import Path

from harness.node.orchestrator.process import KeepRunning, Restart
from harness.node.orchestrator.processes import (
    IcBoundaryArgs,
    IcBoundaryConfig,
    IcBoundaryProcess,
    IcGatewayArgs,
    IcGatewayConfig,
    IcGatewayProcess,
    ReplicaArgs,
    ReplicaConfig,
    ReplicaProcess,
)

BIN = Path("/opt/ic/bin")


def test_replica_argv_with_root_key_and_ipv6() -> None:
    config = ReplicaConfig(BIN, "node-1", Path("/data"), Path("/keys/root.der"))
    spec = ReplicaProcess.build(
        config, ReplicaArgs("v1", "subnet-a", "fd00::2", 8080, 9090)
    ).launch_spec()
    assert spec.name == "replica"
    assert spec.argv == (
        "/opt/ic/bin/replica",
        "--replica-version", "v1",
        "--node-id", "node-1",
        "--subnet-id", "subnet-a",
        "--http-listen", "[fd00::2]:8080",
        "--metrics-listen", "[fd00::2]:9090",
        "--faults-file", "/data/replica-faults.json",
        "--root-key-file", "/keys/root.der",
    )  # fmt: skip
    assert dict(spec.env) == {}


def test_replica_restart_decisions() -> None:
    config = ReplicaConfig(BIN, "node-1", Path("/data"))
    running = ReplicaProcess.build(config, ReplicaArgs("v1", "subnet-a", "127.0.0.2"))
    assert running.restart_decision(ReplicaArgs("v1", "subnet-a", "127.0.0.2")) == KeepRunning()
    assert running.restart_decision(ReplicaArgs("v2", "subnet-a", "127.0.0.2")) == Restart(
        "replica version changed from v1 to v2"
    )
    assert running.restart_decision(ReplicaArgs("v1", "subnet-b", "127.0.0.2")) == Restart(
        "the node moved from subnet subnet-a to subnet subnet-b"
    )
    assert isinstance(running.restart_decision(ReplicaArgs("v1", "subnet-a", "127.0.0.3")), Restart)


def test_gateway_env_overlays_the_env_file_and_brackets_ipv6() -> None:
    config = IcGatewayConfig(BIN, {"LISTEN_PLAIN": "[::]:80", "ACME_ACCOUNT_CREDS": "secret"}, 80)
    process = IcGatewayProcess.build(config, IcGatewayArgs("v1", "fd00::2", 8080, "n1.example"))
    spec = process.launch_spec()
    assert spec.argv == ("/opt/ic/bin/ic-gateway",)
    assert dict(spec.env) == {
        "ACME_ACCOUNT_CREDS": "secret",
        "LISTEN_PLAIN": "[fd00::2]:80",
        "IC_URL": "http://[fd00::2]:8080",
        "DOMAIN": "gateway.icp,n1.example",
        "METRICS_LISTEN": "[fd00::2]:9325",
    }
    assert "secret" not in repr(spec)  # env values never reach logs


def test_gateway_restart_decisions_name_changed_keys_only() -> None:
    config = IcGatewayConfig(BIN, {})
    running = IcGatewayProcess.build(config, IcGatewayArgs("v1", "127.0.0.2"))
    assert running.restart_decision(IcGatewayArgs("v1", "127.0.0.2")) == KeepRunning()
    assert running.restart_decision(IcGatewayArgs("v2", "127.0.0.2")) == Restart(
        "version changed from v1 to v2"
    )
    assert running.restart_decision(IcGatewayArgs("v1", "127.0.0.2", 8080, "x.example")) == Restart(
        "its environment changed (DOMAIN)"
    )


def test_boundary_argv_env_and_restart_on_domain_change() -> None:
    config = IcBoundaryConfig(BIN, {"LISTEN_HTTPS_PORT": "443"}, Path("/registry"))
    running = IcBoundaryProcess.build(config, IcBoundaryArgs("v1", "api.example", "127.0.0.2"))
    spec = running.launch_spec()
    assert spec.argv == (
        "/opt/ic/bin/ic-boundary", "--tls-hostname", "api.example", "--crypto-config", "{}",
    )  # fmt: skip
    assert dict(spec.env) == {
        "LISTEN_HTTPS_PORT": "443",
        "LISTEN_HTTP_ADDR": "127.0.0.2:443",
        "OBS_METRICS_ADDR": "127.0.0.2:9324",
        "REGISTRY_LOCAL_STORE_PATH": "/registry",
    }
    assert (
        running.restart_decision(IcBoundaryArgs("v2", "api.example", "127.0.0.2")) == KeepRunning()
    )
    assert running.restart_decision(IcBoundaryArgs("v1", "b.example", "127.0.0.2")) == Restart(
        "domain name changed from api.example to b.example"
    )
