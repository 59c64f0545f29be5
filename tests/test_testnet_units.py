"""`Testnet`, `Node`, the faults and their healing, and the metric checks, on a fake backend
(`tests/fake_backend.py`): no process or container, so each test takes milliseconds and says
exactly which backend calls the driver made, in which order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_backend import FakeBackend

from harness.driver import (
    CapabilityMissing,
    HarnessError,
    InternetComputer,
    MetricCheckFailed,
    MetricThresholds,
    NodeNotReady,
    Partition,
    Pause,
    ReplicaFaults,
    Run,
    Stop,
    Subnet,
    SubnetType,
    Testnet,
    sweep,
)
from harness.driver.testnet import RECORD_FILE
from harness.driver.waits import GiveUp, wait_until
from harness.node.layout import REPLICA_FAULTS_FILE, Port


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    run = Run.create("pytest")
    yield run
    run.close()
    sweep(everything=True)


@pytest.fixture
def testnet(run: Run) -> Iterator[Testnet]:
    topology = (
        InternetComputer()
        .with_name("fake")
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(2))
    )
    with Testnet(topology, run, FakeBackend).start(timeout=5) as testnet:
        yield testnet


def backend(testnet: Testnet) -> FakeBackend:
    assert isinstance(testnet.backend, FakeBackend)
    return testnet.backend


def calls_since(testnet: Testnet, mark: int) -> list[tuple[str, str]]:
    return backend(testnet).calls[mark:]


def test_start_starts_every_node_waits_for_health_and_records_the_testnet(
    testnet: Testnet,
) -> None:
    fake = backend(testnet)
    assert fake.calls[0] == ("allocate", testnet.testnet_id)
    assert sorted(c for c in fake.calls if c[0] == "start_node") == [
        ("start_node", "subnet-0-node-0"),
        ("start_node", "subnet-1-node-0"),
        ("start_node", "subnet-1-node-1"),
    ]
    statuses = [r for r in fake.requests if r.url.path == "/api/v2/status"]
    assert {r.url.host for r in statuses} == set(fake.nodes)  # each node's health was asked
    record = json.loads((testnet.directory / RECORD_FILE).read_text())
    assert record["state"] == "up"
    assert [n["id"] for n in record["nodes"]] == sorted(fake.nodes)


def test_close_tears_down_and_forgets_the_record(run: Run) -> None:
    topology = InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
    testnet = Testnet(topology, run, FakeBackend).start(timeout=5)
    testnet.close()
    testnet.close()  # twice is fine
    assert backend(testnet).calls.count(("teardown", testnet.testnet_id)) == 1
    assert not (testnet.directory / RECORD_FILE).exists()


def test_faults_are_healed_in_reverse_order_and_the_nodes_waited_for(testnet: Testnet) -> None:
    first, second, _ = testnet.nodes()
    first.pause()
    second.partition()
    assert testnet.active_faults() == [Pause(first.node_id), Partition(second.node_id)]
    assert testnet.active_faults(first.node_id) == [Pause(first.node_id)]
    mark = len(backend(testnet).calls)
    healed = testnet.heal_all(timeout=5)
    assert healed == [Pause(first.node_id), Partition(second.node_id)]
    assert calls_since(testnet, mark) == [
        ("heal_node", second.node_id),
        ("resume_node", first.node_id),
    ]
    assert testnet.active_faults() == []
    assert first.status().is_healthy and second.status().is_healthy


def test_a_node_heals_one_kind_of_fault_of_its_own(testnet: Testnet) -> None:
    first, second, _ = testnet.nodes()
    first.pause()
    second.pause()
    first.resume()
    assert testnet.active_faults() == [Pause(second.node_id)]
    first.resume()  # nothing in force: nothing to do
    assert ("resume_node", first.node_id) in backend(testnet).calls


def test_stopping_a_node_first_undoes_what_a_restart_would_end(testnet: Testnet) -> None:
    node = testnet.nodes()[0]
    node.set_replica_faults(fail_at_start=3)
    node.pause()
    node.partition()
    mark = len(backend(testnet).calls)
    node.stop()
    assert calls_since(testnet, mark) == [
        ("heal_node", node.node_id),
        ("resume_node", node.node_id),
        ("stop_node", node.node_id),
    ]
    # The fault knobs are a file in the node's data dir: they outlive the restart.
    assert testnet.active_faults() == [
        ReplicaFaults(node.node_id, {"fail_at_start": 3}),
        Stop(node.node_id),
    ]
    assert json.loads(backend(testnet).nodes[node.node_id].files[REPLICA_FAULTS_FILE]) == {
        "fail_at_start": 3
    }
    mark = len(backend(testnet).calls)
    testnet.heal_all(timeout=5)
    assert calls_since(testnet, mark) == [
        ("start_node", node.node_id),
        ("write_node_file", node.node_id),
    ]
    assert backend(testnet).nodes[node.node_id].files == {}
    assert node.status().is_healthy


def test_restart_stops_and_starts_and_leaves_nothing_in_force(testnet: Testnet) -> None:
    node = testnet.nodes()[1]
    mark = len(backend(testnet).calls)
    node.restart(timeout=5)
    assert calls_since(testnet, mark) == [
        ("stop_node", node.node_id),
        ("start_node", node.node_id),
    ]
    assert testnet.active_faults() == []


def test_a_fault_in_force_is_not_applied_twice(testnet: Testnet) -> None:
    node = testnet.nodes()[0]
    node.stop()
    mark = len(backend(testnet).calls)
    node.stop()
    assert calls_since(testnet, mark) == []
    assert testnet.active_faults() == [Stop(node.node_id)]
    node.start(timeout=5)
    assert testnet.active_faults() == []


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"unhealty": True}, r"unknown key\(s\) \['unhealty'\]; known keys are"),
        ({"delay_seconds": -1}, r'"delay_seconds" must be a finite number >= 0, got -1'),
        ({"fail_at_start": 300}, r'"fail_at_start" must be an exit code 0-255, got 300'),
        ({"unhealthy": object()}, r"Object of type object is not JSON serializable"),
    ],
)
def test_a_fault_knob_the_replica_would_not_take_is_refused_and_nothing_changes(
    testnet: Testnet, knobs: dict[str, object], message: str
) -> None:
    """A typo in a knob is an error at once, naming it, not a file the replica ignores (a test
    that runs without its fault); the knobs in force stay."""
    node = testnet.nodes()[0]
    node.set_replica_faults(delay_seconds=0.5)
    mark = len(backend(testnet).calls)
    with pytest.raises(HarnessError, match=f"replica fault knobs of {node.node_id}: {message}"):
        node.set_replica_faults(**knobs)
    with pytest.raises(HarnessError, match=message):
        ReplicaFaults(node.node_id, knobs)
    assert calls_since(testnet, mark) == []
    assert testnet.active_faults() == [ReplicaFaults(node.node_id, {"delay_seconds": 0.5})]


def test_new_fault_knobs_replace_the_old_ones(testnet: Testnet) -> None:
    node = testnet.nodes()[0]
    node.set_replica_faults(unhealthy=True)
    node.set_replica_faults(delay_seconds=0.5)
    assert testnet.active_faults() == [ReplicaFaults(node.node_id, {"delay_seconds": 0.5})]
    node.set_replica_faults()
    assert testnet.active_faults() == []
    assert backend(testnet).nodes[node.node_id].files == {}


def test_a_fault_the_backend_lacks_is_refused_with_the_reason(testnet: Testnet) -> None:
    node = testnet.nodes()[0]
    with pytest.raises(CapabilityMissing, match="the fake backend cannot send a signal to one"):
        node.kill_process("replica")
    assert testnet.active_faults() == []


def test_a_fault_on_an_unknown_node_names_the_nodes(testnet: Testnet) -> None:
    with pytest.raises(HarnessError, match=r"no node 'nope'; nodes: \['subnet-0-node-0'"):
        testnet.inject(Pause("nope"))


def test_a_heal_that_leaves_a_node_unhealthy_times_out_naming_it(testnet: Testnet) -> None:
    node = testnet.nodes()[0]
    node.pause()
    backend(testnet).nodes[node.node_id].health = "starting"
    with pytest.raises(
        NodeNotReady,
        match=f"{node.node_id} .replica.*Last: NotHealthy: replica api: health starting",
    ):
        testnet.heal_all(timeout=0.3)


def test_a_node_waits_for_health_and_reports_what_it_saw(testnet: Testnet) -> None:
    node = testnet.nodes()[2]
    fake = backend(testnet).nodes[node.node_id]
    fake.health = "starting"
    with pytest.raises(NodeNotReady) as raised:
        node.await_status_is_healthy(timeout=0.2)
    assert "health starting" in str(raised.value)
    assert node.url(Port.REPLICA_HTTP, "/x") == f"http://{node.node_id}:8080/x"
    assert node.host_header(Port.IC_GATEWAY) == "gateway.icp"
    fake.health = "healthy"
    assert node.await_status_is_healthy(timeout=1).is_healthy


def test_metric_checks_name_every_offender_and_a_failed_scrape(testnet: Testnet) -> None:
    first, second, third = testnet.nodes()
    backend(testnet).nodes[first.node_id].metrics[Port.ORCHESTRATOR_METRICS] = (
        'orchestrator_processes_start_attempts_total{process="replica"} 3\n'
    )
    backend(testnet).nodes[second.node_id].metrics[Port.REPLICA_METRICS] = "critical_errors 1\n"
    backend(testnet).nodes[third.node_id].paused = True  # behind the driver's back: no answer
    with pytest.raises(MetricCheckFailed) as raised:
        testnet.check_metrics()
    text = str(raised.value)
    assert f"{first.node_id}" in text and "orchestrator_processes_start_attempts_total" in text
    assert f"{second.node_id}" in text and "critical_errors" in text
    assert f"Could not check metrics of node {third.node_id}" in text
    backend(testnet).nodes[third.node_id].paused = False
    relaxed = (
        MetricThresholds.defaults()
        .update_orchestrator_metric("orchestrator_processes_start_attempts_total", 3)
        .remove("critical_errors")
    )
    testnet.check_metrics(relaxed)  # no offender left
    for node in testnet.nodes():  # the plugin's own checks after this test see the defaults hold
        backend(testnet).nodes[node.node_id].metrics.clear()


def test_a_wait_ends_at_once_when_its_check_fails_unexpectedly() -> None:
    started = time.monotonic()
    with pytest.raises(KeyError, match="bug"):
        wait_until(lambda: {}["bug"], "a check with a bug", timeout=30)
    assert time.monotonic() - started < 1
    with pytest.raises(NodeNotReady, match="Last: HarnessError: not yet"):
        wait_until(_not_yet, "a node that is not ready", timeout=0.1)


def _not_yet() -> None:
    raise HarnessError("not yet")


def test_a_wait_s_check_gives_up_at_once_however_long_the_wait_had_left() -> None:
    calls = 0

    def exited() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise HarnessError("not yet")
        raise GiveUp("the program exited with status 3: it will not get ready")

    with pytest.raises(GiveUp, match="exited with status 3"):
        wait_until(exited, "a program that exits", timeout=600)
    assert calls == 3
