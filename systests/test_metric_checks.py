"""The metric checks themselves: a broken threshold fails the test with the IC's message, and a
threshold set that is not prefix-free is rejected."""

from __future__ import annotations

import pytest

from harness.driver import sweep

BROKEN_THRESHOLD = """
import signal

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
)

def test_restart_without_raising_the_threshold(testnet):
    (node,) = testnet.nodes()
    killed = node.kill_process("replica", signal.SIGKILL)
    pid = node.await_process("replica", running=True)
    while pid == killed:
        pid = node.await_process("replica", running=True)
    node.await_status_is_healthy()

@pytest.mark.metric_thresholds(update_orchestrator={"orchestrator_processes_start_attempts": 1})
def test_not_prefix_free(testnet):
    pass
"""


@pytest.mark.systest
def test_a_broken_threshold_fails_with_the_ic_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(pytester.path / "state"))
    pytester.makepyfile(BROKEN_THRESHOLD)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--artifacts-dir", "art")
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert (
        'The metric `orchestrator_processes_start_attempts_total{process="replica"}` on node '
        "subnet-0-node-0 exceeded the maximum allowed value: 2 > 1" in output
    )
    assert (
        "`orchestrator_processes_start_attempts` is a prefix of "
        "`orchestrator_processes_start_attempts_total`" in output
    )
    artifacts = list((pytester.path / "art").glob("*restart_without*/*/summary.txt"))
    assert len(artifacts) == 1
    assert "exceeded the maximum allowed value: 2 > 1" in artifacts[0].read_text()
    # The failed tests' testnets were torn down all the same.
    assert sweep(everything=True) == {}
    assert list((pytester.path / "state" / "runs").iterdir()) == []
