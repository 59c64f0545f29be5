"""Cloud-engine nodes are healthy on port 80, served by the ic-gateway side-car.

The counterpart of the IC's `cloud_engine_ic_gateway_test`: a 1-node system subnet, a 4-node
cloud-engine subnet with the ic-gateway launch gate on, and an API boundary node. Marked
`manual` as in the IC; CI runs it explicitly with `--run-manual`.
"""

from __future__ import annotations

import pytest

from harness.driver import (
    IC_GATEWAY_DOMAIN,
    InternetComputer,
    Subnet,
    SubnetType,
    Testnet,
)
from harness.pytest_plugin import define_testnet

CLOUD_ENGINE_NODES = 4
IC_GATEWAY_PORT = 80

testnet = define_testnet(
    lambda: (
        InternetComputer()
        .with_api_boundary_nodes(1)
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(CLOUD_ENGINE_NODES).with_ic_gateway())
    )
)


@pytest.mark.systest
@pytest.mark.manual
def test_cloud_engine_nodes_are_healthy_on_port_80(testnet: Testnet) -> None:
    engines = testnet.topology_snapshot().subnets_of_type(SubnetType.CLOUD_ENGINE)
    nodes = [node for subnet in engines for node in subnet.nodes]
    assert len(nodes) == CLOUD_ENGINE_NODES
    for node in nodes:
        status = node.await_status_is_healthy(port=IC_GATEWAY_PORT)
        assert status.replica_health_status == "healthy"
        assert node.host_header(IC_GATEWAY_PORT) == IC_GATEWAY_DOMAIN
        # Served by ic-gateway, not by the replica: the gateway rejects an unknown Host.
        response = testnet.http.get(
            node.url(IC_GATEWAY_PORT, "/api/v2/status"), headers={"host": "unknown.example"}
        )
        assert response.status_code == 400
        assert "Unknown Domain" in response.text
