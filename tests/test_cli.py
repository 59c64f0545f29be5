"""The `harness` command: `up --once` with a topology file, its errors, and `down`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import load_topology, main
from harness.driver import HarnessError, TopologyError, sweep
from harness.driver.run import tagged_processes


@pytest.fixture(autouse=True)
def own_state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(root))
    yield root
    sweep(everything=True)  # whatever a failing test left


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    assert capsys.readouterr().out == "removed 0 process(es) of 0 run(s) (every run)\n"
