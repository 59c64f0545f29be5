"""Every node at once, through the driver's async face: the health of every node checked
concurrently, load sent through every ic-gateway of a cloud-engine subnet at the same time (each
gateway's own request counter accounts for every request sent through it), and a frozen node
reported as such while the others answer (and named when a wait for all of them times out).

Async tests (pytest-asyncio, marked `asyncio` for strict mode) beside the plugin's fixtures: the
plugin heals and checks the metrics after them as after any test.
"""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Node, NodeNotReady, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

GATEWAYS = 4
REQUESTS = 100  # per gateway
GATEWAY_METRICS_PORT = 9325

testnet = define_testnet(
    lambda: (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(GATEWAYS).with_ic_gateway())
    ),
    scope="module",
)


def answered(node: Node) -> float:
    """Requests the node's ic-gateway answered with 200, by its own counter."""
    return sum(
        sample.value
        for sample in node.metrics(GATEWAY_METRICS_PORT)
        if sample.name == "ic_gateway_http_total" and sample.labels.get("status") == "200"
    )


@pytest.mark.systest
@pytest.mark.asyncio
async def test_every_gateway_carries_load_at_once(testnet: Testnet) -> None:
    health = await testnet.aio.await_all_healthy()
    assert len(health) == 1 + GATEWAYS
    assert all(h.healthy for h in health), health
    gateways = [n for n in testnet.nodes() if "ic-gateway" in n.programs]
    assert len(gateways) == GATEWAYS
    before = {node.node_id: answered(node) for node in gateways}

    report = await testnet.aio.load(requests=REQUESTS, concurrency=8)

    assert report.failed == 0, report.summary()
    assert {g.node_id: g.ok for g in report.gateways} == {n.node_id: REQUESTS for n in gateways}
    assert {g.node_id: g.url for g in report.gateways} == {n.node_id: n.url(80) for n in gateways}
    for node in gateways:
        assert answered(node) - before[node.node_id] == REQUESTS, node.node_id
    assert report.latency(0.99) >= report.latency(0.5) > 0


@pytest.mark.systest
@pytest.mark.asyncio
async def test_a_frozen_node_shows_in_the_health_of_all(testnet: Testnet) -> None:
    frozen = testnet.topology_snapshot().subnets_of_type(SubnetType.CLOUD_ENGINE)[0].nodes[0]
    frozen.pause()  # healed after the test by the plugin, as any fault
    # Room for the nodes that answer to do so on a starved machine; the frozen one never does.
    health = {h.node_id: h for h in await testnet.aio.health(timeout=5.0)}
    assert not health[frozen.node_id].healthy
    assert "Timeout" in health[frozen.node_id].detail
    assert [h for h in health.values() if not h.healthy] == [health[frozen.node_id]]
    with pytest.raises(NodeNotReady, match=rf"1 of 5 node\(s\) .* {frozen.node_id}: "):
        await testnet.aio.await_all_healthy(timeout=5.0)


@pytest.mark.systest
@pytest.mark.asyncio
async def test_a_load_report_names_each_kind_of_failure_with_an_example(testnet: Testnet) -> None:
    gateways = [n for n in testnet.nodes() if "ic-gateway" in n.programs]
    frozen = gateways[0]
    frozen.pause()  # healed after the test by the plugin, as any fault

    report = await testnet.aio.load(path="/api/v2/nowhere", requests=4, concurrency=2, timeout=3)

    by_node = {g.node_id: g for g in report.gateways}
    assert by_node[frozen.node_id].failures == {"no answer in 3 s": 4}
    for node in gateways[1:]:
        assert by_node[node.node_id].failures == {"status 404": 4}, report.summary()
    lines = report.summary().splitlines()
    assert "0 ok, 16 failed" in lines[0]
    assert lines[1].startswith(
        f"  {frozen.node_id} ({frozen.url(80)}): 4 failed: 4 x no answer in 3 s, "
        "e.g. GET /api/v2/nowhere timed out (asyncio.timeout) (after 3"
    ), lines
    example = by_node[gateways[1].node_id].examples["status 404"]
    assert example.startswith("404 Not Found: '"), example
    assert len(lines) == 1 + len(gateways), lines
