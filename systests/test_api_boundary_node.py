"""API boundary nodes: ic-boundary runs and routes to healthy replicas; a domain change restarts
it once; removing the node's API boundary record stops it."""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

BOUNDARY_PORT = 443

testnet = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(2))
        .with_api_boundary_nodes(1, ["api.testnet.icp"])
    )
)


@pytest.mark.systest
def test_ic_boundary_routes_and_follows_its_record(testnet: Testnet) -> None:
    (boundary,) = testnet.topology_snapshot().api_boundary_nodes
    assert boundary.domain == "api.testnet.icp"
    status = boundary.await_status_is_healthy(port=BOUNDARY_PORT)
    assert status.impl_version == "1.0.0"  # answered by a replica behind it
    health = boundary.get(BOUNDARY_PORT, "/health")
    assert health.status_code == 204
    assert boundary.process_start_attempts("ic-boundary") == 1

    # The pid before the change: read after it, it could already be the new process's, and
    # the loop below would wait for a change that has happened.
    old = boundary.process_pid("ic-boundary")
    testnet.registry.set_domain(boundary.node_id, "api2.testnet.icp")
    pid = boundary.await_process("ic-boundary", running=True)
    while pid == old:
        pid = boundary.await_process("ic-boundary", running=True)
    assert boundary.await_status_is_healthy(port=BOUNDARY_PORT).is_healthy
    assert boundary.process_start_attempts("ic-boundary") == 2

    testnet.registry.remove_api_boundary_node(boundary.node_id)
    boundary.await_process("ic-boundary", running=False)
    boundary.await_status_is_unavailable(port=BOUNDARY_PORT)
    assert boundary.process_pid("replica") is None  # an unassigned node runs no replica
