"""Crash recovery: a replica or a gateway killed with SIGKILL is restarted and healthy again."""

from __future__ import annotations

import signal

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(
        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway()
    )
)


# Each killed process is started a second time on purpose.
@pytest.mark.systest
@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_killed_replica_and_gateway_come_back(testnet: Testnet) -> None:
    (node,) = testnet.nodes()
    for process, port in (("replica", 8080), ("ic-gateway", 80)):
        killed = node.kill_process(process, signal.SIGKILL)
        pid = node.await_process(process, running=True)
        while pid == killed:
            pid = node.await_process(process, running=True)
        assert node.await_status_is_healthy(port=port).is_healthy
        assert node.process_start_attempts(process) == 2
    assert node.await_status_is_healthy(port=80).is_healthy
