"""Unit tests of the upgrade and boundary-node checks: one `Orchestrator` pass at a time over a
real registry store, with fake runners (no process is spawned)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from harness.node.orchestrator.args import OrchestratorConfig
from harness.node.orchestrator.dashboard import render
from harness.node.orchestrator.fake import FakeRunner
from harness.node.orchestrator.orchestrator import Orchestrator
from harness.node.registry import (
    ApiBoundaryNodeRecord,
    LocalStore,
    NodeRecord,
    RegistrySnapshot,
    SubnetRecord,
    SubnetType,
)

NODE = "node-1"
IP = "127.1.0.2"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    """An orchestrator under test, its registry store and its fake runners."""

    def __init__(self, tmp_path: Path, **config: object) -> None:
        self.store = LocalStore(tmp_path / "registry")
        self.runners: dict[str, FakeRunner] = {}
        self.clock = Clock()
        self.orchestrator = Orchestrator(
            OrchestratorConfig(
                node_id=NODE,
                registry_local_store=self.store.path,
                data_dir=tmp_path / "data",
                ic_binary_directory=Path("/opt/ic/bin"),
                **config,  # type: ignore[arg-type]
            ),
            runner_factory=self._runner,
            clock=self.clock,
        )
        self.version = 0

    def _runner(self, name: str) -> FakeRunner:
        return self.runners.setdefault(
            name, FakeRunner(name, first_pid=100 * (len(self.runners) + 1))
        )

    def write(
        self,
        subnet: str | None = "subnet-a",
        subnet_type: SubnetType = SubnetType.APPLICATION,
        version: str = "v1",
        features: frozenset[str] = frozenset(),
        api_boundary: bool = False,
        domain: str | None = None,
    ) -> None:
        self.version += 1
        subnets = {}
        if subnet is not None:
            subnets[subnet] = SubnetRecord(subnet_type, (NODE,), version)
        self.store.write(
            RegistrySnapshot(
                self.version,
                subnets=subnets,
                nodes={NODE: NodeRecord(IP, domain=domain, features=features)},
                api_boundary_nodes={NODE: ApiBoundaryNodeRecord(version)} if api_boundary else {},
            )
        )

    def write_corrupt(self) -> None:
        self.version += 1
        (self.store.path / f"{self.version:020d}.json").write_text('{"version": ')

    def pass_(self) -> None:
        asyncio.run(self.orchestrator.run_pass())

    def metric(self, name: str, **labels: str) -> float | None:
        return self.orchestrator.metrics.registry.get_sample_value(name, labels)

    def dashboard(self) -> dict[str, str]:
        text = render(self.orchestrator.dashboard_info())
        return dict(line.split(": ", 1) for line in text.splitlines())

    @property
    def replica(self) -> FakeRunner:
        return self.runners["replica"]

    @property
    def gateway(self) -> FakeRunner:
        return self.runners["ic-gateway"]

    @property
    def boundary(self) -> FakeRunner:
        return self.runners["ic-boundary"]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_no_registry_version_yet_does_nothing(node: Node) -> None:
    node.pass_()
    assert node.replica.starts == []
    assert node.dashboard()["subnet id"] == "Subnet not known yet"
    assert node.dashboard()["last registry version"] == "0"
    assert node.metric("orchestrator_failed_consecutive_upgrade_checks_total") == 0


def test_assigned_node_runs_the_replica_with_its_registry_record(node: Node) -> None:
    node.write()
    node.pass_()
    assert node.replica.last_spec.argv == (
        "/opt/ic/bin/replica",
        "--replica-version", "v1",
        "--node-id", NODE,
        "--subnet-id", "subnet-a",
        "--http-listen", f"{IP}:8080",
        "--metrics-listen", f"{IP}:9090",
        "--faults-file", str(node.orchestrator.config.data_dir / "replica-faults.json"),
    )  # fmt: skip
    assert dict(node.replica.last_spec.env) == {}
    board = node.dashboard()
    assert board["subnet id"] == "subnet-a"
    assert board["replica process id"] == "100"
    assert board["replica version"] == "v1"
    assert board["ic-gateway process id"] == "None"
    assert board["ic-gateway enabled"] == "false"
    assert board["last registry version"] == "1"
    assert node.metric("orchestrator_registry_version") == 1


def test_version_bump_restarts_the_replica_on_the_next_pass(node: Node) -> None:
    node.write()
    node.pass_()
    node.write(version="v2")
    node.pass_()
    assert (len(node.replica.starts), node.replica.stops) == (1, 1)
    node.replica.exit(-15)
    node.pass_()
    assert node.replica.last_spec.argv[2] == "v2"
    assert node.dashboard()["replica version"] == "v2"
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 2


def test_reading_the_dashboard_after_an_exit_changes_nothing_until_the_pass(node: Node) -> None:
    node.write()
    node.pass_()
    node.replica.exit(1, runtime=0.2)
    for _ in range(3):
        board = node.dashboard()
        assert board["replica state"] == "running"  # until a pass folds the exit in
        assert board["replica process id"] == "None"  # the runner's own view
        assert board["replica version"] == "v1"
    backoff = "orchestrator_process_restart_backoff_seconds"
    assert node.metric(backoff, process="replica") == 0
    node.pass_()
    assert node.dashboard()["replica state"] == "backoff"
    assert node.metric(backoff, process="replica") == 0.5
    assert len(node.replica.starts) == 1  # restarted once the backoff is over, not before


def test_unassigned_node_stops_everything(node: Node) -> None:
    node.write(subnet_type=SubnetType.CLOUD_ENGINE, features=frozenset({"ic_gateway"}))
    node.pass_()
    assert node.replica.is_running() and node.gateway.is_running()
    node.write(subnet=None)
    node.pass_()
    assert node.replica.stops == 1
    assert node.gateway.stops == 1
    assert node.dashboard()["subnet id"] == "Unassigned"


def test_gateway_gate_from_the_registry_feature_turns_on_and_off(node: Node) -> None:
    node.write(subnet_type=SubnetType.CLOUD_ENGINE)
    node.pass_()
    assert node.gateway.starts == []
    node.write(subnet_type=SubnetType.CLOUD_ENGINE, features=frozenset({"ic_gateway"}))
    node.pass_()
    assert node.gateway.is_running()
    assert node.dashboard()["ic-gateway enabled"] == "true"
    node.write(subnet_type=SubnetType.CLOUD_ENGINE)
    node.pass_()
    assert node.gateway.stops == 1
    assert node.replica.stops == 0
    assert node.dashboard()["ic-gateway enabled"] == "false"


def test_gateway_gate_from_the_flag_only_on_cloud_engines(tmp_path: Path) -> None:
    node = Node(tmp_path, enable_ic_gateway=True, ic_gateway_port=8880, ic_gateway_domain="gw.test")
    node.write(subnet_type=SubnetType.SYSTEM)
    node.pass_()
    assert node.gateway.starts == []
    node.write(subnet_type=SubnetType.CLOUD_ENGINE, domain="n1.example")
    node.pass_()
    env = node.gateway.last_spec.env
    assert env["LISTEN_PLAIN"] == f"{IP}:8880"
    assert env["DOMAIN"] == "gw.test,n1.example"


def test_corrupt_registry_version_is_counted_and_ignored(node: Node) -> None:
    node.write()
    node.pass_()
    node.write_corrupt()
    node.pass_()
    node.pass_()
    assert node.metric("orchestrator_registry_errors_total") == 1
    assert node.metric("orchestrator_registry_version") == 1
    assert (len(node.replica.starts), node.replica.stops) == (1, 0)
    node.write(version="v2")  # a good version after the bad one is used
    node.pass_()
    assert node.replica.stops == 1
    assert node.metric("orchestrator_registry_version") == 3


def test_failed_checks_are_counted_in_a_row_and_reset(node: Node) -> None:
    node.write()
    node.replica.start_error = FileNotFoundError(errno.ENOENT, "No such file")
    node.pass_()
    assert node.metric("orchestrator_failed_consecutive_upgrade_checks_total") == 1
    node.clock.now += 0.5  # the backoff after a failed spawn
    node.pass_()
    assert node.metric("orchestrator_failed_consecutive_upgrade_checks_total") == 2
    node.replica.start_error = None
    node.clock.now += 1.0
    node.pass_()
    assert node.replica.is_running()
    assert node.metric("orchestrator_failed_consecutive_upgrade_checks_total") == 0
    assert (
        node.metric("orchestrator_tasks_failed_total", task_name="GuestOS_upgrade", reason="panic")
        is None
    )


def test_a_bug_in_a_check_is_counted_as_a_failed_task(node: Node, monkeypatch) -> None:
    def broken(*args: object) -> None:
        raise TypeError("boom")

    monkeypatch.setattr(node.orchestrator.subnet_processes, "stop_all", broken)
    node.write(subnet=None)
    node.pass_()
    assert node.metric("orchestrator_failed_consecutive_upgrade_checks_total") == 1
    assert (
        node.metric("orchestrator_tasks_failed_total", task_name="GuestOS_upgrade", reason="panic")
        == 1
    )


def test_api_boundary_node_runs_ic_boundary_until_its_record_goes(node: Node, caplog) -> None:
    node.write(subnet=None, api_boundary=True)
    node.pass_()
    node.pass_()
    assert node.boundary.starts == []
    assert caplog.text.count("There is no domain associated with the node") == 1
    node.write(subnet=None, api_boundary=True, domain="api1.example")
    node.pass_()
    spec = node.boundary.last_spec
    assert spec.argv == (
        "/opt/ic/bin/ic-boundary", "--tls-hostname", "api1.example", "--crypto-config", "{}",
    )  # fmt: skip
    assert dict(spec.env) == {
        "LISTEN_HTTP_ADDR": f"{IP}:443",
        "OBS_METRICS_ADDR": f"{IP}:9324",
        "REGISTRY_LOCAL_STORE_PATH": str(node.store.path),
    }
    assert node.dashboard()["ic-boundary process id"] == str(node.boundary.pid())
    node.write(subnet=None)
    node.pass_()
    assert node.boundary.stops == 1


def test_api_boundary_domain_removed_stops_ic_boundary(node: Node) -> None:
    node.write(subnet=None, api_boundary=True, domain="api1.example")
    node.pass_()
    node.write(subnet=None, api_boundary=True, domain=None)
    node.pass_()
    assert node.boundary.stops == 1


def test_metrics_that_the_driver_checks_exist_at_zero(node: Node) -> None:
    assert node.metric("orchestrator_cup_deserialization_failed_total") == 0
    assert node.metric("orchestrator_state_removal_failed_total") == 0
    assert node.metric("ic_orchestrator_info", ic_active_version="0.0.0") == 1
    for process in ("replica", "ic-gateway", "ic-boundary"):
        assert node.metric("orchestrator_processes_start_attempts_total", process=process) == 0
        assert node.metric("orchestrator_processes_stop_attempts_total", process=process) == 0
