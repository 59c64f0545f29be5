"""The local backend end to end: real orchestrators and node programs on loopback addresses,
health, teardown that leaves nothing behind (also after SIGINT and after a killed run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.driver import BackendOptions, InternetComputer, Run, Subnet, SubnetType, Testnet, sweep
from harness.driver.run import RUN_ID_ENV, tagged_processes


def small_topology() -> InternetComputer:
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())
        .with_unassigned_nodes(1)
    )


def processes_of(run_id: str) -> list[psutil.Process]:
    return tagged_processes().get(run_id, [])


@pytest.fixture
def run() -> Iterator[Run]:
    run = Run.create()
    yield run
    run.close()


def test_testnet_comes_up_healthy_and_teardown_leaves_nothing(run: Run) -> None:
    with Testnet(small_topology(), run).start(timeout=30) as testnet:
        snapshot = testnet.topology_snapshot()
        system, engine = snapshot.subnets
        ips = {node.ip for node in testnet.nodes()}
        assert len(ips) == 3 and all(ip.startswith("127.") for ip in ips)
        assert system.nodes[0].status().is_healthy
        gateway_status = engine.nodes[0].status(port=80)
        assert gateway_status.is_healthy
        assert gateway_status.impl_version == "1.0.0"
        unassigned = snapshot.unassigned_nodes[0]
        assert unassigned.dashboard()["subnet id"] == "Unassigned"
        assert unassigned.process_pid("replica") is None
        described = testnet.describe()
        assert [n["role"] for n in described["nodes"]] == ["replica", "replica", "unassigned"]
        assert "gateway" in described["nodes"][1]["urls"]
        names = sorted(p.name() for p in processes_of(run.run_id))
        # 3 orchestrators, their fork servers, 2 replicas, 1 gateway; the run's template
        assert names.count("orchestrator") == 3
        assert names.count("forkserver") == 4
        assert names.count("replica") == 2 and names.count("ic-gateway") == 1
    # What stays is the run's template: it forks the orchestrators of the run's next testnets.
    assert [p.cmdline()[0] for p in processes_of(run.run_id)] == [
        f"harness template of run {run.run_id}"
    ]
    run.close()
    assert processes_of(run.run_id) == []


def test_exec_spawned_nodes_come_up_and_leave_nothing(run: Run) -> None:
    """`--spawn exec`: every program a fresh interpreter, as before the fork server."""
    options = BackendOptions(spawn="exec")
    with Testnet(small_topology(), run, "local", options).start(timeout=30) as testnet:
        node = testnet.topology_snapshot().subnets[1].nodes[0]
        assert node.status(port=80).is_healthy
        replica = psutil.Process(node.process_pid("replica"))
        orchestrator = replica.parent()  # exec'd by the orchestrator itself: no fork server
        assert orchestrator is not None
        assert orchestrator.cmdline()[1:3] == ["-m", "harness.node.orchestrator"]
        assert replica.cmdline()[1].endswith("/replica")  # its console script, run by python
    assert processes_of(run.run_id) == []


def test_closing_a_run_with_a_testnet_still_up_leaves_nothing(run: Run) -> None:
    """The run ends before its testnet is closed (a forgotten `close()`): its sweep must stop
    the testnet's supervision first, or the supervisor starts the orchestrators it kills again."""
    testnet = Testnet(small_topology(), run).start(timeout=30)
    assert len(processes_of(run.run_id)) > 0
    run.close()
    time.sleep(1.0)  # ten of the supervisor's restart delays
    assert processes_of(run.run_id) == []
    testnet.close()  # afterwards still harmless
    assert processes_of(run.run_id) == []


def test_artifacts_hold_logs_registry_metrics_topology(run: Run, tmp_path: Path) -> None:
    with Testnet(small_topology(), run).start(timeout=30) as testnet:
        out = testnet.collect_artifacts(tmp_path / "art", ["outcome: passed"])
    node_dir = out / "nodes" / "subnet-1-node-0"
    assert (node_dir / "orchestrator.log").stat().st_size > 0
    assert (node_dir / "replica.log").stat().st_size > 0
    assert (node_dir / "ic-gateway.log").stat().st_size > 0
    assert (
        "orchestrator_processes_start_attempts_total"
        in (node_dir / "metrics-orchestrator-9091.txt").read_text()
    )
    assert (out / "registry" / "00000000000000000001.json").is_file()
    assert json.loads((out / "topology.json").read_text())["nodes"][0]["id"] == "subnet-0-node-0"
    assert (out / "summary.txt").read_text() == "outcome: passed\n"


@pytest.fixture
def own_state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state root of the test's own, shared with the `harness` processes it starts; whatever
    a failing test left in it is removed afterwards."""
    root = tmp_path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(root))
    yield root
    sweep(everything=True)


def test_harness_up_tears_down_on_sigint(own_state_root: Path) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--json", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        document = json.loads(_read_json_document(up))
        assert len(document["nodes"]) == 6
        run_ids = set(tagged_processes())
        assert run_ids, "harness up started no tagged process"
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 130  # 128 + SIGINT, as shells expect
        leftovers = [p for rid in run_ids for p in processes_of(rid)]
        assert leftovers == []
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_a_killed_run_is_swept_by_the_next_one(own_state_root: Path) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--json", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _read_json_document(up)
    (run_id,) = tagged_processes()
    up.kill()  # SIGKILL: no teardown runs
    up.wait()
    assert processes_of(run_id), "the nodes should have outlived the killed run"
    killed = sweep()
    assert killed[run_id] >= 6
    assert processes_of(run_id) == []
    assert not (own_state_root / "runs" / run_id).exists()


def _read_json_document(process: subprocess.Popen[bytes]) -> str:
    """Read stdout until one complete JSON document was printed."""
    assert process.stdout is not None
    lines: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            err = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"harness up exited early ({process.wait()}): {err}")
        lines.append(line)
        if line.rstrip() == b"}":
            return b"".join(lines).decode()
    raise AssertionError("harness up printed no JSON document within 60s")


def test_run_id_is_inherited_by_node_programs(run: Run) -> None:
    with Testnet(InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1)), run).start(
        timeout=30
    ) as testnet:
        node = testnet.nodes()[0]
        pid = node.process_pid("replica")
        assert pid is not None
        assert psutil.Process(pid).environ()[RUN_ID_ENV] == run.run_id


@pytest.mark.skipif(os.geteuid() != 0, reason="iptables rules need root")
def test_partition_rules_of_a_dead_run_are_swept(
    loopback_ip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.driver.backends import local_firewall

    # A state root of its own: the made-up run has no owner, so a sweep of the shared root by
    # another xdist worker would count it dead and delete its rules under this test.
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    local_firewall.isolate(loopback_ip, "dead-run-for-test", "node-x")
    try:
        listing = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True)
        assert "harness:dead-run-for-test:node-x:" in listing.stdout
        with monkeypatch.context() as other:  # the sweep of another state root's runs
            other.setenv("HARNESS_STATE_DIR", str(tmp_path / "other-state"))
            assert local_firewall.sweep_rules(lambda run_id: True) == 0
        assert local_firewall.sweep_rules(lambda run_id: run_id == "dead-run-for-test") == 2
        for chain in ("INPUT", "OUTPUT"):
            listing = subprocess.run(["iptables", "-S", chain], capture_output=True, text=True)
            assert "dead-run-for-test" not in listing.stdout
    finally:
        local_firewall.heal(loopback_ip, "dead-run-for-test", "node-x")
