"""Time limits, interrupts and retries of tests with a testnet, through inner pytest sessions
(pytester) on the local backend and on docker: a test over its limit fails with its evidence
and leaves nothing; the session's limit cuts the running test short; a test stuck past its
limit is ended by the watchdog; Ctrl-C and SIGTERM leave the test's artifacts and exit 130 and
143; pytest-rerunfailures' attempts each get a testnet, artifacts and a report of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import engines
import pytest
from inner_pytest import BACKENDS, nothing_left, own_state  # noqa: F401 (autouse)

HANGING = """
import os, time
import pytest
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
)

@pytest.mark.timeout(LIMIT, func_only=True)  # not the start (docker: an image build)
def test_hangs(testnet):
    open("ready", "w").close()
    time.sleep(600)

def test_next(testnet):
    assert testnet.nodes()[0].status().is_healthy
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_test_over_its_limit_fails_with_its_evidence_and_leaves_nothing(
    pytester: pytest.Pytester, backend: str
) -> None:
    pytester.makepyfile(HANGING.replace("LIMIT", "3"))
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "--backend", backend, "--junitxml=junit.xml", "-p", "no:cacheprovider"
    )
    assert time.monotonic() - started < 300  # not the 600 s it would sleep
    result.assert_outcomes(passed=1, failed=1)  # the next test runs as usual
    result.stdout.fnmatch_lines(
        [
            "*TimeLimitExceeded: TIMEOUT: *test_hangs ran * s, over its limit of 3 s "
            "(its timeout marker)*",
            "*- harness: what happened -*",
            "*registry version 1: the initial topology*",
            "report: *report.html",
        ]
    )
    artifacts = next((pytester.path / "artifacts").glob("*test_hangs"))
    assert (artifacts / "report.html").is_file()
    # Collected while the testnet was up: every program's log and metrics.
    node = artifacts / "ic-0" / "nodes" / "subnet-0-node-0"
    assert (node / "replica.log").stat().st_size > 0
    assert (
        "replica_http_health_status_state_transitions_total"
        in (node / "metrics-replica-9090.txt").read_text()
    )
    junit = (pytester.path / "junit.xml").read_text()
    assert "TIMEOUT: " in junit and "harness: what happened" in junit
    nothing_left()


def test_the_session_limit_cuts_the_running_test_short(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HANGING.replace("LIMIT", "300"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--session-timeout", "20")
    result.stdout.fnmatch_lines(
        [
            "*TIMEOUT: *test_hangs ran *, over its limit of * s (what the session's limit of 20 s "
            "left)*"
        ]
    )
    assert result.parseoutcomes()["failed"] == 1
    nothing_left()


@pytest.mark.parametrize(
    ("backend", "sig", "status"),
    [
        ("local", signal.SIGINT, 130),
        ("local", signal.SIGTERM, 143),
        pytest.param("docker", signal.SIGINT, 130, marks=engines.needs_docker("Ctrl-C on docker")),
    ],
)
def test_an_interrupted_test_leaves_its_artifacts_tears_down_and_exits_as_the_cli(
    pytester: pytest.Pytester, backend: str, sig: signal.Signals, status: int
) -> None:
    pytester.makepyfile(HANGING.replace("LIMIT", "300"))
    with (pytester.path / "out.txt").open("w") as out:
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--backend", backend],
            cwd=pytester.path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            while not (pytester.path / "ready").exists():
                assert inner.poll() is None, (pytester.path / "out.txt").read_text()
                assert time.monotonic() < deadline, "the inner test never started"
                time.sleep(0.1)
            inner.send_signal(sig)
            assert inner.wait(timeout=120) == status, (pytester.path / "out.txt").read_text()
        finally:
            inner.kill()
            inner.wait()
    output = (pytester.path / "out.txt").read_text()
    assert "interrupted: its artifacts are in" in output, output
    artifacts = next((pytester.path / "artifacts").glob("*test_hangs"))
    assert (artifacts / "report.html").is_file()
    assert "outcome: interrupted" in (artifacts / "ic-0" / "summary.txt").read_text()
    assert (artifacts / "ic-0" / "nodes" / "subnet-0-node-0" / "replica.log").is_file()
    nothing_left()


FLAKY = """
from pathlib import Path
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
)

def test_flaky(testnet):
    Path("testnets").open("a").write(testnet.testnet_id + "\\n")
    attempts = Path("attempts")
    attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
    assert attempts.read_text() == "xx", "fails the first time"
"""


def test_every_rerun_attempt_has_its_own_testnet_artifacts_and_report(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(FLAKY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--reruns", "1")
    outcomes = result.parseoutcomes()  # with the lowest versions, also a count of warnings
    assert (outcomes.get("passed"), outcomes.get("rerun"), outcomes.get("failed")) == (1, 1, None)
    first, second = (pytester.path / "testnets").read_text().split()
    assert first != second  # a fresh testnet for the second attempt
    root = pytester.path / "artifacts"
    name = "test_every_rerun_attempt_has_its_own_testnet_artifacts_and_report.py_test_flaky"
    assert "outcome: failed" in (root / name / first / "summary.txt").read_text()
    assert "outcome: passed" in (root / f"{name}-attempt-2" / second / "summary.txt").read_text()
    assert (root / name / "report.html").is_file()
    assert (root / f"{name}-attempt-2" / "report.html").is_file()
    index = (root / "index.html").read_text()
    assert "test_flaky (attempt 1)" in index and "test_flaky (attempt 2)" in index
    assert "1 passed, 1 rerun" in index
    nothing_left()


STUCK = """
import signal, time
import pytest
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
)

@pytest.mark.timeout(2, func_only=True)
def test_stuck(testnet):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # no handler will run
    time.sleep(600)
"""


def test_a_test_stuck_past_its_limit_is_ended_by_the_watchdog_with_its_evidence(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(STUCK)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--timeout-grace", "2", timeout=120
    )
    assert result.ret == 1
    result.stderr.fnmatch_lines(
        [
            "harness: TIMEOUT: *test_stuck ran * s, over its limit of 2 s (its timeout marker)*. "
            "It did not stop "
            "within 2 s of its limit (stuck where no signal handler runs): ending the session",
            "Thread 0x* (most recent call first):",  # every thread's stack, the test's too:
            '*File "*test_a_test_stuck_past_its_limit*.py", line * in test_stuck',
            "harness: what happened:",
            "*registry version 1: the initial topology*",
        ]
    )
    artifacts = next((pytester.path / "artifacts").glob("*test_stuck"))
    assert (artifacts / "report.html").is_file()
    assert "outcome: timeout (stuck)" in (artifacts / "ic-0" / "summary.txt").read_text()
    nothing_left()


ARMED = """
import pytest
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin.plugin import define_testnet, limits_key

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
)

MARKER
def test_armed(testnet, request):
    assert request.config.stash[limits_key].armed is ARMED
"""


@pytest.mark.parametrize(
    ("options", "marker", "armed"),
    [
        ([], "", True),  # the harness's default limit
        (["--timeout", "0"], "", False),  # pytest-timeout's "no limit" holds
        ([], "@pytest.mark.timeout(0)", False),
        (["--timeout", "0"], "@pytest.mark.timeout(30)", True),
    ],
)
def test_a_limit_of_0_means_none_as_in_pytest_timeout(
    pytester: pytest.Pytester, options: list[str], marker: str, armed: bool
) -> None:
    pytester.makepyfile(ARMED.replace("MARKER", marker).replace("is ARMED", f"is {armed}"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider", *options).assert_outcomes(passed=1)
    nothing_left()
