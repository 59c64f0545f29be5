"""The ic-gateway launch gate: off by default, switchable on a running testnet, and never
effective outside cloud-engine subnets."""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

IC_GATEWAY_PORT = 80

testnet = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2))
    )
)

gated_elsewhere = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1).with_ic_gateway())
        .add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(1).with_ic_gateway())
        .add_subnet(Subnet(SubnetType.VERIFIED_APPLICATION).add_nodes(1).with_ic_gateway())
    )
)


def cloud_engine_nodes(testnet: Testnet) -> list:
    (engine,) = testnet.topology_snapshot().subnets_of_type(SubnetType.CLOUD_ENGINE)
    return list(engine.nodes)


@pytest.mark.systest
def test_gate_off_by_default_no_gateway_replicas_healthy(testnet: Testnet) -> None:
    for node in cloud_engine_nodes(testnet):
        assert node.status().is_healthy
        assert node.process_pid("ic-gateway") is None
        node.await_status_is_unavailable(port=IC_GATEWAY_PORT)


@pytest.mark.systest
def test_turning_the_gate_on_and_off_starts_and_stops_the_gateways(testnet: Testnet) -> None:
    nodes = cloud_engine_nodes(testnet)
    for node in nodes:
        testnet.registry.set_feature(node.node_id, "ic_gateway", True)
    for node in nodes:
        assert node.await_status_is_healthy(port=IC_GATEWAY_PORT).is_healthy
    for node in nodes:
        testnet.registry.set_feature(node.node_id, "ic_gateway", False)
    for node in nodes:
        node.await_process("ic-gateway", running=False)
        node.await_status_is_unavailable(port=IC_GATEWAY_PORT)
        assert node.status().is_healthy  # the replica is left alone
        assert node.process_start_attempts("replica") == 1


@pytest.mark.systest
def test_non_cloud_engine_subnets_never_run_ic_gateway(gated_elsewhere: Testnet) -> None:
    nodes = gated_elsewhere.nodes()
    assert len(nodes) == 3
    for node in nodes:
        assert node.status().is_healthy
        assert node.process_pid("ic-gateway") is None
        assert node.process_start_attempts("ic-gateway") == 0
        node.await_status_is_unavailable(port=IC_GATEWAY_PORT)
