"""Faults through the driver's public API, on any backend: pause/resume, partition/heal, and
faults a test leaves behind healed before the metric checks. (Those that start programs again
are in test_fault_restarts.py.)"""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Partition, Pause, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet


def topology() -> InternetComputer:
    """Two cloud-engine nodes with ic-gateway (also what `harness up --topology
    systests/test_faults.py` brings up, for `pytest --testnet`)."""
    return InternetComputer().add_subnet(
        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway()
    )


testnet = define_testnet(topology)


@pytest.mark.systest
def test_pause_and_resume(testnet: Testnet) -> None:
    node, other = testnet.nodes()
    node.pause()
    node.await_status_is_unavailable(timeout=10)
    assert other.status(port=80).is_healthy
    node.resume()
    assert node.await_status_is_healthy(port=80, timeout=10).is_healthy
    assert node.process_start_attempts("replica") == 1  # frozen, not restarted


@pytest.mark.systest
def test_partition_and_heal(testnet: Testnet) -> None:
    node, other = testnet.nodes()
    node.partition()
    node.await_status_is_unavailable(timeout=10)
    assert other.status().is_healthy
    node.heal()
    assert node.await_status_is_healthy(timeout=20).is_healthy
    assert testnet.active_faults() == []


@pytest.mark.systest
def test_faults_left_behind_are_healed_before_the_metric_checks(testnet: Testnet) -> None:
    first, second = testnet.nodes()
    first.pause()
    second.partition()
    assert testnet.active_faults() == [Pause(first.node_id), Partition(second.node_id)]
    # No resume/heal here: the plugin heals both, then the metric checks scrape every node.
