"""A CI failure's testnet brought back (`harness up --from artifacts/<test>/<testnet>`): an inner
session's failed test leaves its artifacts; the testnet comes back with the test's topology and
its registry's last version, on the local backend and on docker, and (local, with a Prometheus)
what its Prometheus scraped is served again; what cannot come back is said; bad input is a
clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness_cli import harness
from inner_pytest import BACKENDS, nothing_left, own_state  # noqa: F401 (autouse)

FAILING = """
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer()
    .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())
    .with_unassigned_nodes(1)
)

def test_fails(testnet):
    testnet.registry.assign_node("unassigned-node-0", "subnet-0")
    testnet.node("unassigned-node-0").await_ready(30)
    raise AssertionError("on purpose")
"""
ARTIFACTS = Path("artifacts/test_failing.py_test_fails")


def _failed_test_artifacts(pytester: pytest.Pytester, *args: str) -> Path:
    pytester.makepyfile(test_failing=FAILING)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(failed=1)
    (testnet,) = (pytester.path / ARTIFACTS).glob("ic-*")
    return testnet.relative_to(pytester.path)


def _up_from(artifacts: Path, *args: str) -> tuple[dict[str, Any], str]:
    up = harness("up", "--detach", "--json", "--from", str(artifacts), *args, timeout=300)
    assert up.returncode == 0, up.stderr
    document: dict[str, Any] = json.loads(up.stdout)
    return document, up.stderr


def _roles(document: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {node["id"]: (node["role"], node["subnet"]) for node in document["nodes"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_tests_testnet_comes_back_with_its_last_registry_version(
    pytester: pytest.Pytester, backend: str
) -> None:
    artifacts = _failed_test_artifacts(pytester)  # on the local backend: any backend replays
    document, stderr = _up_from(artifacts, "--backend", backend)
    try:
        assert document["backend"] == backend
        assert _roles(document) == {
            "subnet-0-node-0": ("replica", "subnet-0"),
            "unassigned-node-0": ("replica", "subnet-0"),
        }
        assert "gateway" in document["nodes"][0]["urls"]
        assert document["replay"][1].startswith("registry: the content of ic-0's version 2")
        assert "not brought back: the programs' state" in stderr
        (entry,) = json.loads(harness("ls", "--json").stdout)
        assert all(node["healthy"] for node in entry["nodes"])
    finally:
        assert harness("down", document["testnet"]).returncode == 0
    nothing_left()


def test_what_its_prometheus_scraped_is_served_again(pytester: pytest.Pytester) -> None:
    artifacts = _failed_test_artifacts(pytester, "--prometheus")
    events = [json.loads(line) for line in (artifacts / "events.jsonl").read_text().splitlines()]
    during = max(event["t"] for event in events if event["kind"] == "registry")
    document, stderr = _up_from(artifacts)
    try:
        assert "served by this testnet's Prometheus" in stderr
        answer = httpx.get(
            f"{document['prometheus']}/api/v1/query",
            params={
                "query": 'orchestrator_processes_start_attempts_total{process="replica"}',
                "time": str(during + 2),
            },
            trust_env=False,
            timeout=10,
        ).json()
        series = {item["metric"]["node"] for item in answer["data"]["result"]}
        assert {"subnet-0-node-0", "unassigned-node-0"} <= series, answer
    finally:
        assert harness("down", document["testnet"]).returncode == 0
    nothing_left()


def test_bad_input_names_the_problem(pytester: pytest.Pytester) -> None:
    missing = harness("up", "--once", "--from", "artifacts/nothing-here")
    assert missing.returncode == 1
    assert "--from artifacts/nothing-here: no testnet.json there" in missing.stderr
    artifacts = _failed_test_artifacts(pytester)
    parent = harness("up", "--once", "--from", str(artifacts.parent))
    assert parent.returncode == 1
    assert f"; it holds testnets: {artifacts.name}" in parent.stderr
    both = harness("up", "--once", "--from", str(artifacts), "--topology", "x.py")
    assert both.returncode == 1
    assert "--from brings the artifacts' topology back: no --topology" in both.stderr
    (artifacts / "testnet.json").write_text("{}")
    broken = harness("up", "--once", "--from", str(artifacts))
    assert broken.returncode == 1
    assert "testnet.json is unusable" in broken.stderr
    nothing_left()
