"""Node reassignment: an unassigned node stops serving; assigned to another subnet, it serves
there (the counterpart of the IC's node_reassignment_test)."""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway())
        .add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(1).with_replica_version("1.1.0"))
    )
)


# The moved node's replica is started twice on purpose: once in its first subnet, once in the
# second.
@pytest.mark.systest
@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_unassign_then_assign_to_another_subnet(testnet: Testnet) -> None:
    snapshot = testnet.topology_snapshot()
    engine = snapshot.subnets_of_type(SubnetType.CLOUD_ENGINE)[0]
    application = snapshot.subnets_of_type(SubnetType.APPLICATION)[0]
    node = engine.nodes[1]

    testnet.registry.unassign_node(node.node_id)
    node.await_status_is_unavailable()
    node.await_status_is_unavailable(port=80)
    assert node.dashboard()["subnet id"] == "Unassigned"
    node.await_process("replica", running=False)
    node.await_process("ic-gateway", running=False)
    assert engine.nodes[0].status(port=80).is_healthy  # the rest of the subnet is unaffected

    testnet.registry.assign_node(node.node_id, application.subnet_id)
    status = node.await_status_is_healthy()
    assert status.impl_version == "1.1.0"  # the application subnet's replica version
    assert node.subnet_id == application.subnet_id
    assert node.dashboard()["subnet id"] == application.subnet_id
    assert node.process_pid("ic-gateway") is None  # not a cloud engine any more
    assert node.process_start_attempts("replica") == 2
    assert node.metric("orchestrator_processes_stop_attempts_total", 9091, process="replica") == 1
