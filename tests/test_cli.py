"""The `harness` command as its users meet it: `up` (once, in the foreground, detached; its
listing, signals and failed starts), `ls`, `logs`, `down`, `--version` and `--help`."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness_cli import harness

from harness.cli import load_topology, main
from harness.driver import IC_GATEWAY_DOMAIN, HarnessError, TopologyError, sweep
from harness.driver.run import tagged_processes
from harness.driver.waits import wait_until


@pytest.fixture(autouse=True)
def own_state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(root))
    yield root
    sweep(everything=True)  # whatever a failing test left


def test_up_once_with_a_topology_file_prints_json_and_leaves_nothing(tmp_path: Path) -> None:
    topology = tmp_path / "net.py"
    topology.write_text(
        "from harness.driver import InternetComputer, Subnet, SubnetType\n"
        "def topology():\n"
        "    return InternetComputer().with_name('tiny').add_subnet(\n"
        "        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2))\n"
    )
    result = harness("up", "--once", "--json", "--topology", str(topology), "--enable-ic-gateway")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["testnet"].startswith("tiny-")
    assert [n["subnet_type"] for n in document["nodes"]] == ["cloud_engine", "cloud_engine"]
    assert all("gateway" in n["urls"] for n in document["nodes"])
    assert "every node is healthy (2 nodes)" in result.stderr
    assert tagged_processes() == {}


def test_bad_topologies_are_refused_before_anything_starts(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("from harness.driver import InternetComputer\ntopology = InternetComputer()\n")
    result = harness("up", "--once", "--topology", str(empty))
    assert result.returncode == 1
    assert "harness: the topology has no nodes" in result.stderr
    with pytest.raises(HarnessError, match="no such file"):
        load_topology(str(tmp_path / "missing.py"))
    with pytest.raises(HarnessError, match="is not an InternetComputer"):
        load_topology("json:__name__")
    with pytest.raises(HarnessError, match=r"calling dumps\(\) failed: TypeError"):
        load_topology("json:dumps")
    with pytest.raises(HarnessError, match="cannot import nosuchmodule"):
        load_topology("nosuchmodule")
    assert issubclass(TopologyError, HarnessError)


def test_down_reports_what_it_removed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["down", "--all"]) == 0
    assert capsys.readouterr().out == "removed 0 leftover(s) of 0 run(s) (every run)\n"


SMALL_TOPOLOGY = (
    "from harness.driver import InternetComputer, Subnet, SubnetType\n"
    "def topology():\n"
    "    return (InternetComputer().with_name('cli')\n"
    "        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))\n"
    "        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())\n"
    "        .with_unassigned_nodes(1).with_api_boundary_nodes(1))\n"
)
# What each role serves, and nothing else (`describe()`'s URLs).
SERVED = {
    "replica": {"api", "metrics", "orchestrator_metrics", "dashboard"},
    "replica+gateway": {
        "api", "metrics", "orchestrator_metrics", "dashboard", "gateway", "gateway_metrics"
    },
    "unassigned": {"orchestrator_metrics", "dashboard"},
    "api_boundary": {"boundary", "boundary_metrics", "orchestrator_metrics", "dashboard"},
}  # fmt: skip


@pytest.fixture
def small_topology(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(SMALL_TOPOLOGY)
    return path


def test_version() -> None:
    result = harness("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"harness {importlib.metadata.version('harness')}"


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ([], []),
        (["up"], ["(default: local)", "(default: 60.0)", "(default: artifacts)"]),
        (["ls"], []),
        (["logs"], ["(default: orchestrator)"]),
        (["down"], []),
        (["images"], []),
        (["images", "build"], []),
        (["images", "push"], []),
    ],
)
def test_help_shows_the_defaults_and_an_example(command: list[str], defaults: list[str]) -> None:
    result = harness(*command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal
    assert re.search(r"^examples?:$", result.stdout, re.MULTILINE)
    assert f"harness {' '.join(command)}".strip() in result.stdout.split("example")[-1]
    for default in defaults:
        assert default in text


def test_up_once_piped_at_80_columns_shows_whole_ids_and_only_served_urls(
    small_topology: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "up", "--once", "--topology", str(small_topology)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout + result.stderr
    nodes: dict[str, dict[str, str]] = {}
    current = ""
    for line in result.stdout.splitlines():
        if match := re.fullmatch(r"  (\S+)  (127\.\d+\.\d+\.\d+)(  domain \S+)?", line):
            current = match.group(1)
            nodes[current] = {}
        elif match := re.fullmatch(r"    (\w+) +(http://127\.\d+\.\d+\.\d+:\d+)", line):
            nodes[current][match.group(1)] = match.group(2)
    assert set(nodes) == {"subnet-0-node-0", "subnet-1-node-0", "unassigned-node-0", "api-bn-0"}
    assert set(nodes["subnet-0-node-0"]) == SERVED["replica"]
    assert set(nodes["subnet-1-node-0"]) == SERVED["replica+gateway"]
    assert set(nodes["unassigned-node-0"]) == SERVED["unassigned"]
    assert set(nodes["api-bn-0"]) == SERVED["api_boundary"]
    assert "every node is healthy (4 nodes)" in result.stderr


def test_detached_testnet_is_listed_answers_shows_logs_and_goes_down(
    small_topology: Path,
) -> None:
    started = time.monotonic()
    up = harness("up", "--detach", "--json", "--topology", str(small_topology))
    assert up.returncode == 0, up.stderr
    assert time.monotonic() - started < 60
    document = json.loads(up.stdout)
    testnet_id = document["testnet"]
    try:
        # Every URL listed answers: a node lists what it serves, nothing else.
        for node in document["nodes"]:
            for name, url in node["urls"].items():
                host = {"gateway": IC_GATEWAY_DOMAIN, "boundary": node["domain"]}.get(name)
                response = httpx.get(url + "/", headers={"host": host} if host else {})
                assert response.status_code < 500, (node["id"], name, url)
        listed = json.loads(harness("ls", "--json").stdout)
        assert [entry["testnet"] for entry in listed] == [testnet_id]
        assert listed[0]["held_by"].startswith("harness up --detach (pid ")
        assert [n["healthy"] for n in listed[0]["nodes"]] == [True] * 4
        table = harness("ls").stdout
        row = rf"^{testnet_id} +local +4/4 nodes healthy +never +harness up"
        assert re.search(row, table, re.M)
        logs = harness("logs", testnet_id, "subnet-1-node-0", "--process", "ic-gateway")
        assert logs.returncode == 0, logs.stderr
        assert "ic-gateway" in logs.stdout
        missing = harness("logs", testnet_id, "subnet-1-node-0", "--process", "nope")
        assert missing.returncode == 1
        assert "has no log of 'nope'; logs: orchestrator, ic-gateway, replica" in missing.stderr
        follow = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "logs", testnet_id, "subnet-0-node-0", "-f"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follow.stdout is not None
        # Following once its first line is out (the log has lines already): a `down` before
        # `logs -f` found the testnet would make it exit 1, "no testnet".
        first = follow.stdout.readline()
        down = harness("down", testnet_id)
        assert down.returncode == 0, down.stderr
        assert f"tore testnet {testnet_id} down" in down.stdout
        out, _ = follow.communicate(timeout=30)  # following ends with the testnet
        assert follow.returncode == 0
        assert first and "orchestrator stopped" in first + out
        assert harness("ls").stdout.startswith("no testnets")
        assert tagged_processes() == {}
    finally:
        harness("down", "--all")


def test_ctrl_c_and_sigterm_tear_down_and_exit_128_plus_the_signal(small_topology: Path) -> None:
    for sig, at in ((signal.SIGINT, "up;"), (signal.SIGTERM, "up;"), (signal.SIGINT, None)):
        up = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "up", "--topology", str(small_topology)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert up.stderr is not None
        if at is None:
            # While it starts: once it has started node processes, so that its handlers are in
            # place (a SIGINT while Python still imports the CLI kills it, status -2, not 130).
            wait_until(lambda: tagged_processes() or None, "harness up starting nodes", 60)
        else:
            for line in up.stderr:
                if line.startswith(at):
                    break
        up.send_signal(sig)
        assert up.wait(timeout=60) == 128 + sig, (sig, at)
        assert tagged_processes() == {}


def test_a_failed_start_leaves_its_artifacts(tmp_path: Path) -> None:
    # An API boundary node of a testnet without subnets has no replica to route to: its status
    # answers 503 ("no healthy replica"), so the start times out, every time.
    topology = tmp_path / "no_subnets.py"
    topology.write_text(
        "from harness.driver import InternetComputer\n"
        "topology = InternetComputer().with_name('nosubnets').with_api_boundary_nodes(1)"
        ".with_unassigned_nodes(1)\n"
    )
    artifacts = tmp_path / "artifacts"
    result = harness(
        "up", "--once", "--timeout", "5", "--topology", str(topology),
        "--artifacts-dir", str(artifacts),
    )  # fmt: skip
    assert result.returncode == 1
    (directory,) = artifacts.iterdir()
    assert f"artifacts of the failed start: {directory}" in result.stderr
    summary = (directory / "summary.txt").read_text()
    assert "the start failed" in summary
    assert "NodeNotReady: await ready of api-bn-0 (api_boundary)" in summary
    assert "Last: NotHealthy: ic-boundary boundary: 503: no healthy replica" in summary
    assert sorted(p.name for p in (directory / "registry").iterdir()) == [
        "00000000000000000001.json"
    ]
    assert json.loads((directory / "topology.json").read_text())["testnet"] == directory.name
    boundary, unassigned = (
        directory / "nodes" / "api-bn-0",
        directory / "nodes" / "unassigned-node-0",
    )
    assert "0 subnet(s), 0 replica(s)" in (boundary / "ic-boundary.log").read_text()
    assert (boundary / "orchestrator.log").stat().st_size > 0
    assert (unassigned / "orchestrator.log").stat().st_size > 0
    assert "ic_boundary_" in (boundary / "metrics-ic-boundary-9324.txt").read_text()
    assert "orchestrator_" in (unassigned / "metrics-orchestrator-9091.txt").read_text()
    assert not (unassigned / "metrics-replica-9090.txt").exists()  # it serves no replica
    assert tagged_processes() == {}


def test_down_names_what_there_is(small_topology: Path) -> None:
    result = harness("down", "nosuch-0")
    assert result.returncode == 1
    assert "harness: no testnet 'nosuch-0'; testnets: none" in result.stderr
    both = harness("down", "nosuch-0", "--all")
    assert both.returncode == 1
    assert "name testnets or give --all, not both" in both.stderr
