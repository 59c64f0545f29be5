"""pytest attached to a running testnet (`--testnet`), through inner sessions (pytester) on a
testnet that `harness up --detach` (or `--keep-testnet`) left up, on the local backend and on
docker: a test that injects faults, crash-loops a program and writes the registry, then one
that sees the testnet as it was started (the reset), and a second session that does the same;
the testnet stays up, listed as attached while a session holds it; a module's shared testnet is
reset the same way; a topology that does not match is refused naming the differences; xdist and
unknown testnets are usage errors."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from harness_cli import harness
from inner_pytest import BACKENDS, nothing_left, own_state  # noqa: F401 (autouse)

from harness.driver import Run
from harness.driver.report_worker import RENDERER_SOCKET
from harness.driver.testnet import RECORD_FILE, TESTNET_IDS
from harness.driver.testnets import find_testnet
from harness.driver.waits import wait_until

TOPOLOGY = """
from harness.driver import InternetComputer, Subnet, SubnetType

def topology():
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway())
        .with_unassigned_nodes(1)
    )
"""

TESTS = """
import json
import subprocess
import sys
import time

import pytest
from harness.driver import Pause, Stop
from harness.pytest_plugin import define_testnet
from topology import topology

testnet = define_testnet(topology)


@pytest.mark.metric_thresholds(remove=["orchestrator_processes_start_attempts_total"])
def test_changes_everything(testnet):
    first, second = testnet.topology_snapshot().subnets[0].nodes
    pid = first.kill_process("replica")
    first.await_status_is_healthy(timeout=30)
    assert first.process_pid("replica") != pid
    first.kill_process("replica")  # a quick second exit: a crash-loop backoff
    backoff = "orchestrator_process_restart_backoff_seconds"
    deadline = time.monotonic() + 30
    while first.metric(backoff, 9091, process="replica") == 0:
        assert time.monotonic() < deadline, "the replica never backed off"
        time.sleep(0.05)
    first.await_status_is_healthy(timeout=30)
    testnet.inject(Stop(second.node_id))
    testnet.registry.assign_node("unassigned-node-0", "subnet-0")
    testnet.node("unassigned-node-0").await_ready(30)
    testnet.inject(Pause("unassigned-node-0"))
    if testnet.attached:
        listing = subprocess.run(
            [sys.executable, "-m", "harness.cli", "ls", "--json"], capture_output=True, text=True
        )
        (entry,) = json.loads(listing.stdout)
        assert "attached by pytest" in entry["held_by"]
    # Nothing healed here: the plugin heals the faults, the next test's reset the rest.


def test_sees_the_testnet_as_it_was_started(testnet):
    assert testnet.active_faults() == []
    latest = testnet.registry.latest()
    first = testnet.registry.store.read(1)
    assert (latest.subnets, latest.nodes) == (first.subnets, first.nodes)
    assert [n.node_id for n in testnet.topology_snapshot().unassigned_nodes] == [
        "unassigned-node-0"
    ]
    for node in testnet.topology_snapshot().subnets[0].nodes:
        assert node.status(80).is_healthy
        # Counters read as on a fresh testnet: each program started once.
        assert node.process_start_attempts("replica") == 1
        assert node.process_start_attempts("ic-gateway") == 1
        samples = node.metrics(9091)
        backoffs = [s for s in samples if s.name == "orchestrator_process_restart_backoff_seconds"]
        assert backoffs and all(s.value == 0 for s in backoffs)
    testnet.node("unassigned-node-0").await_process("replica", running=False)
    # The default metric checks then pass, as on a fresh testnet.
"""


def _up(*args: str) -> str:
    """`harness up --detach` with `args`; the id of the testnet it left up."""
    up = harness("up", "--detach", "--topology", "topology.py", *args, timeout=300)
    assert up.returncode == 0, up.stderr
    return _listing()[0]["testnet"]


def _listing() -> list[dict[str, Any]]:
    listing = harness("ls", "--json")
    assert listing.returncode == 0, listing.stderr
    entries: list[dict[str, Any]] = json.loads(listing.stdout)
    return entries


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_attached_session_finds_the_testnet_as_it_was_started_before_each_test(
    pytester: pytest.Pytester, backend: str
) -> None:
    pytester.makepyfile(topology=TOPOLOGY, test_attached=TESTS)
    testnet_id = _up("--backend", backend)
    try:
        # Its `harness up` keeps a renderer beside it, warm: the sessions' reports are drawn there.
        renderer = find_testnet(testnet_id).directory / RENDERER_SOCKET
        wait_until(lambda: True if renderer.exists() else None, "the testnet's renderer", 60)
        for _ in range(2):  # a second session finds it as the first one did
            result = pytester.runpytest_subprocess(
                "-q", "-p", "no:cacheprovider", "--testnet", testnet_id
            )
            result.assert_outcomes(passed=2)
            result.stdout.fnmatch_lines(
                [f"attached to testnet {testnet_id}, left up: `harness down {testnet_id}`*"]
            )
        drawn = (renderer.parent / "renderer.log").read_text().splitlines()
        reports = sorted((pytester.path / "artifacts").glob("*/report.html"))
        assert len(reports) == 2
        assert sorted(drawn) == sorted(f"wrote {report}" for report in reports * 2)
        (entry,) = _listing()
        assert entry["testnet"] == testnet_id
        assert entry["held_by"].startswith("harness up --detach")
        assert "attached" not in entry["held_by"]
        assert all(node["healthy"] for node in entry["nodes"])
        events = (pytester.path / "artifacts").glob("*/*/events.jsonl")
        resets = [
            event["text"]
            for path in events
            for event in map(json.loads, path.read_text().splitlines())
            if event["kind"] == "reset"
        ]
        assert any("registry version" in text and "written" in text for text in resets), resets
    finally:
        assert harness("down", testnet_id).returncode == 0
    nothing_left()


def test_a_modules_shared_testnet_is_reset_before_each_of_its_tests(
    pytester: pytest.Pytester,
) -> None:
    shared = TESTS.replace("define_testnet(topology)", 'define_testnet(topology, scope="module")')
    pytester.makepyfile(topology=TOPOLOGY, test_shared=shared)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    nothing_left()


def test_a_kept_testnet_is_attached_to_and_supervised_by_the_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(topology=TOPOLOGY, test_attached=TESTS)
    kept = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "--keep-testnet", "-k", "as_it_was_started"
    )
    kept.assert_outcomes(passed=1)
    (entry,) = _listing()
    assert entry["held_by"] == "kept"
    try:
        result = pytester.runpytest_subprocess(
            "-q", "-p", "no:cacheprovider", "--testnet", entry["testnet"]
        )
        result.assert_outcomes(passed=2)
    finally:
        assert harness("down", entry["testnet"]).returncode == 0
    nothing_left()


KILLED_WHILE_ATTACHED = """
import os, sys
from harness.driver import Pause, Stop
from harness.driver.testnets import attach

testnet = attach(sys.argv[1], "a session that dies")
first, second = testnet.topology_snapshot().subnets[0].nodes
testnet.inject(Stop(first.node_id))
testnet.inject(Pause(second.node_id))
testnet.registry.unassign_node(second.node_id)
os.kill(os.getpid(), 9)
"""


def test_a_session_killed_while_attached_leaves_what_the_next_one_heals(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(topology=TOPOLOGY, test_attached=TESTS)
    dies = pytester.makepyfile(dies=KILLED_WHILE_ATTACHED)
    testnet_id = _up()
    try:
        died = pytester.run(sys.executable, str(dies), testnet_id)
        assert died.ret == -9, died.stderr.str()
        (entry,) = _listing()
        assert "attached" not in entry["held_by"]  # its holder is gone
        result = pytester.runpytest_subprocess(
            "-q", "-p", "no:cacheprovider", "--testnet", testnet_id, "-k", "as_it_was_started"
        )
        result.assert_outcomes(passed=1)
    finally:
        assert harness("down", testnet_id).returncode == 0
    nothing_left()


def test_a_topology_that_does_not_match_is_refused_naming_the_differences(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        topology=TOPOLOGY,
        test_other="""
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer()
    .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(3))
    .with_api_boundary_nodes(1)
)

def test_never_runs(testnet):
    raise AssertionError("attached to a testnet of another topology")
""",
    )
    testnet_id = _up()
    try:
        result = pytester.runpytest_subprocess(
            "-q", "-p", "no:cacheprovider", "--testnet", testnet_id
        )
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            [
                f"--testnet {testnet_id}: its topology is not the one the fixture `testnet` "
                "declares:",
                "  - subnet 0 (cloud_engine) nodes: the test declares 3, the testnet has 2",
                "  - subnet 0 (cloud_engine) launch gates: the test declares [], the testnet "
                "has ['ic_gateway']",
                "  - unassigned nodes: the test declares 0, the testnet has 1",
                "  - API boundary nodes: the test declares 1, the testnet has 0",
                "run these tests without --testnet, or on a testnet of that topology*",
            ]
        )
        result.stdout.no_fnmatch_line("*attached to a testnet of another topology*")
        (entry,) = _listing()  # left as it was
        assert entry["testnet"] == testnet_id and "attached" not in entry["held_by"]
    finally:
        assert harness("down", testnet_id).returncode == 0
    nothing_left()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--testnet", "ic-7", "-n", "2"],
            "ERROR: harness_testnet = ic-7: one testnet runs one test at a time, so it cannot "
            "serve several xdist workers; run without -n (or -n 0)*",
        ),
        (
            ["--testnet", "ic-7"],
            "ERROR: harness_testnet = ic-7: no testnet 'ic-7'; testnets: none*",
        ),
    ],
    ids=["xdist", "unknown"],
)
def test_usage_errors(pytester: pytest.Pytester, arguments: list[str], message: str) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_testnet_on_a_backend_that_cannot_attach_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    run = Run.create("a swarm testnet's owner")  # this process: alive while the session runs
    assert TESTNET_IDS.claim("ic-0", run.run_id)
    (run.directory / "ic-0").mkdir()
    record = {"testnet": "ic-0", "backend": "swarm", "state": "up", "run": run.run_id}
    (run.directory / "ic-0" / RECORD_FILE).write_text(json.dumps(record))
    try:
        pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--testnet", "ic-0")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                "ERROR: harness_testnet = ic-0: testnet ic-0 runs on the swarm backend, which "
                "cannot attach to a testnet another process started (the local and docker "
                "backends can)"
            ]
        )
    finally:
        run.close()
