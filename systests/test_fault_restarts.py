"""Faults that start a node's programs again, through the driver's public API, on any backend:
stop/start/restart, the orchestrator killed -9 (brought back as systemd would), and a
crash-looping replica backing off. (The others are in test_faults.py: one file per xdist
worker, so the two run side by side.)"""

from __future__ import annotations

import signal
import time

import pytest

from harness.driver import InternetComputer, Stop, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(
        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway()
    )
)


# Stopping and starting a node starts its programs again by design; the new orchestrator's
# counters start from zero, so the defaults hold.
@pytest.mark.systest
def test_stop_start_restart(testnet: Testnet) -> None:
    node, _ = testnet.nodes()
    node.stop()
    node.await_status_is_unavailable(timeout=10)
    assert testnet.active_faults() == [Stop(node.node_id)]
    node.start()
    assert node.status(port=80).is_healthy
    node.restart()
    assert node.status(port=80).is_healthy
    assert testnet.active_faults() == []


@pytest.mark.systest
def test_orchestrator_killed_is_brought_back_without_a_second_replica(testnet: Testnet) -> None:
    node, _ = testnet.nodes()
    started = node.metric("process_start_time_seconds", 9091)
    node.kill_process("orchestrator", signal.SIGKILL)
    testnet_wait = time.monotonic() + 30
    while True:  # a new orchestrator answers with a later start time
        try:
            if node.metric("process_start_time_seconds", 9091) > started:
                break
        except Exception:
            pass  # down between the kill and the restart
        assert time.monotonic() < testnet_wait, "the orchestrator did not come back in 30 s"
        time.sleep(0.1)
    assert node.await_status_is_healthy(port=80, timeout=30).is_healthy
    # The new orchestrator stopped what the old one left before starting its own replica: one
    # start, no port clash (a second replica could not bind the node's port and would crash).
    assert node.process_start_attempts("replica") == 1
    assert node.process_start_attempts("ic-gateway") == 1
    assert node.process_pid("replica") is not None


# The crash loop makes many start attempts on purpose.
@pytest.mark.systest
@pytest.mark.metric_thresholds(remove=["orchestrator_processes_start_attempts_total"])
def test_crash_looping_replica_backs_off_and_recovers(testnet: Testnet) -> None:
    node, _ = testnet.nodes()
    node.set_replica_faults(fail_at_start=3)
    node.kill_process("replica", signal.SIGKILL)
    time.sleep(4)  # the observation window: count the starts made in it
    # Backoff 0.5 s, 1 s, 2 s, ...: a handful of starts in 4 s, not hundreds.
    attempts = node.process_start_attempts("replica")
    assert 2 <= attempts <= 6
    backoff = node.metric("orchestrator_process_restart_backoff_seconds", 9091, process="replica")
    assert backoff > 0
    # Between two waits a start is under way (starting, then exited): poll for the wait itself.
    deadline = time.monotonic() + 10
    while node.dashboard()["replica state"] != "backoff":
        assert time.monotonic() < deadline, "the dashboard never showed the replica in backoff"
        time.sleep(0.05)
    node.set_replica_faults()  # cleared: the next start succeeds
    assert node.await_status_is_healthy(timeout=40).is_healthy
