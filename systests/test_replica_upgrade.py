"""Replica upgrade: a new replica version in the registry restarts every replica of the subnet
exactly once, and each then reports the new version."""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(3).with_ic_gateway())
    )
)


# The upgrade restarts each upgraded replica once on purpose.
@pytest.mark.systest
@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_bumping_the_replica_version_restarts_each_replica_once(testnet: Testnet) -> None:
    snapshot = testnet.topology_snapshot()
    engine = snapshot.subnets_of_type(SubnetType.CLOUD_ENGINE)[0]
    system = snapshot.root_subnet()
    old_pids = {node.node_id: node.process_pid("replica") for node in engine.nodes}

    testnet.registry.set_replica_version(engine.subnet_id, "2.0.0")

    for node in engine.nodes:
        status = node.await_status_is_healthy(version="2.0.0")
        assert status.impl_version == "2.0.0"
        assert node.process_pid("replica") != old_pids[node.node_id]
        assert node.process_start_attempts("replica") == 2
        # The gateway proxies to the upgraded replica.
        assert node.await_status_is_healthy(port=80).impl_version == "2.0.0"
        assert node.dashboard()["replica version"] == "2.0.0"
    # The other subnet is not upgraded.
    assert system.nodes[0].status().impl_version == "1.0.0"
    assert system.nodes[0].process_start_attempts("replica") == 1
