"""A failing system test explains itself, through inner pytest sessions (pytester) on the local
backend and on docker: what happened in pytest's own output and in JUnit XML (a crashed
replica), the log checks (a forbidden line fails a test that passed, an allowed one does not),
time limits that leave evidence and nothing running, Ctrl-C and SIGTERM during a test, and
pytest-rerunfailures' attempts each with its own testnet and report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import engines
import pytest

from harness.driver import sweep
from harness.driver.run import tagged_processes

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
BACKENDS = [
    "local",
    pytest.param("docker", marks=engines.needs_docker("a docker test's explanation")),
]


@pytest.fixture(autouse=True)
def own_state(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The inner sessions' runs in a state root of their own, so that what they leave (and
    nothing else) is what `sweep` and `tagged_processes` see here."""
    pytester.makeini(INI)
    state = pytester.path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(state))
    return state


def _nothing_left() -> None:
    assert tagged_processes() == {}
    assert sweep(everything=True) == {}  # no container, service or network of the run either


CRASHING_REPLICA = """
import time
from harness.driver import InternetComputer, ReplicaFaults, Signal, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(
        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway()
    )
)

def test_replica_crashes(testnet):
    node = testnet.nodes()[0]
    testnet.inject(ReplicaFaults(node.node_id, (("fail_at_start", 3),)))
    testnet.inject(Signal(node.node_id, "replica"))
    deadline = time.monotonic() + 60
    while b"exiting with 3" not in testnet.logs().get((node.node_id, "replica"), b""):
        assert time.monotonic() < deadline, "the replica never failed its start"
        time.sleep(0.1)
    raise AssertionError("the replica is down")

def test_passes(testnet):
    assert testnet.nodes()[0].status().is_healthy
"""


@pytest.mark.parametrize(
    ("backend", "xdist"),
    [
        pytest.param("local", [], id="local"),
        pytest.param("local", ["-n", "2"], id="local-xdist"),
        pytest.param(
            "docker", [], id="docker", marks=engines.needs_docker("a docker test's explanation")
        ),
    ],
)
def test_a_crashed_replica_is_explained_in_the_output_and_in_junit(
    pytester: pytest.Pytester, backend: str, xdist: list[str]
) -> None:
    pytester.makepyfile(CRASHING_REPLICA)
    result = pytester.runpytest_subprocess(
        "-q", "--backend", backend, "--junitxml=junit.xml", "-p", "no:cacheprovider", *xdist
    )
    result.assert_outcomes(passed=1, failed=1)
    artifacts = (
        pytester.path
        / "artifacts"
        / "test_a_crashed_replica_is_explained_in_the_output_and_in_junit.py_test_replica_crashes"
    )
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the replica is down*",
            "*- harness: what happened -*",
            "test window: * s; times are seconds since the test started",
            f"testnet ic-* ({backend} backend): * events",  # under xdist: ic-0 or ic-1
            "*registry version 1: the initial topology*",
            "*subnet-0-node-0 replica * replica fault knobs (fail_at_start=3) of subnet-0-node-0 "
            "injected",
            "*SIGKILL to the replica of subnet-0-node-0 injected*",
            "*! subnet-0-node-0 replica * replica exited on its own (exit code 3)*",
            "*replica backs off*",
            "last * lines of subnet-0-node-0 replica (*exited on its own (exit code 3)*; "
            "logged an error): *replica.log",
            "  | * replica ERROR harness.node.replica: fault fail_at_start in *",
            f"artifacts: {artifacts}",
            f"report: {artifacts / 'report.html'}",
        ]
    )
    # A passing test prints nothing new: one section, the failed test's.
    assert result.stdout.str().count("harness: what happened") == 1
    assert (artifacts / "explanation.txt").read_text().startswith("test window:")
    (case,) = [
        c
        for c in ElementTree.parse(pytester.path / "junit.xml").iter("testcase")
        if c.attrib["name"] == "test_replica_crashes"
    ]
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "harness: what happened" in failure.text
    assert "replica exited on its own (exit code 3)" in failure.text
    _nothing_left()


FORBIDDEN_LINE = """
import time
import pytest
from harness.driver import InternetComputer, ReplicaFaults, Signal, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1)),
    scope="module",
)
# The replica is made to fail its start: more start attempts than the default allows.
pytestmark = pytest.mark.metric_thresholds(remove=["orchestrator_processes_start_attempts_total"])

def fail_a_start(testnet):
    node = testnet.nodes()[0]
    testnet.inject(ReplicaFaults(node.node_id, (("fail_at_start", 4),)))
    testnet.inject(Signal(node.node_id, "replica"))
    deadline = time.monotonic() + 60
    while testnet.logs()[(node.node_id, "replica")].count(b"exiting with 4") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)

@pytest.mark.log_patterns(forbid=[r"exiting with \\d+ before serving"])
def test_forbidden(testnet):
    fail_a_start(testnet)

@pytest.mark.log_patterns(forbid=[r"exiting with \\d+ before serving"], allow=[r"with 4"])
def test_allowed(testnet):
    fail_a_start(testnet)

def test_defaults_only(testnet):
    fail_a_start(testnet)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_forbidden_line_fails_a_test_that_passed_naming_it(
    pytester: pytest.Pytester, backend: str
) -> None:
    pytester.makepyfile(FORBIDDEN_LINE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--backend", backend)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*LogCheckFailed: log checks failed: 1 forbidden line(s)",
            "*subnet-0-node-0 replica line * replica ERROR *exiting with 4 before serving "
            "(forbidden: *)",
            "*- harness: what happened -*",
            "*X testnet * log checks failed: 1 forbidden line(s)",
            "log checks: 1 forbidden line(s)",
            "last * lines of subnet-0-node-0 replica (*matched a log check): *",
        ]
    )
    # Each test checks its own window of the module's testnet: the line the first logged does
    # not fail the third, which logs its own (allowed by nothing, but forbidden by nothing).
    _nothing_left()


def test_the_session_s_patterns_come_from_an_option_and_an_ini_key(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(FORBIDDEN_LINE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--log-forbid", "exiting with", "-k", "defaults_only"
    )
    result.assert_outcomes(failed=1)
    pytester.makeini(INI + "harness_log_forbid =\n    exiting with\nharness_log_allow = with 4\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "defaults_only")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--log-forbid", "(")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*forbidden log pattern '(' is not a valid regex*"])


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
            "*TimeLimitExceeded: TIMEOUT: *test_hangs ran 3.* s, over its limit of 3 s "
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
    _nothing_left()


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
    _nothing_left()


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
    _nothing_left()


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
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
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
    _nothing_left()


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
    _nothing_left()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('log_patterns(forbid=["("])', "*test_x: log_patterns: forbidden log pattern '(' is not*"),
        (
            'log_patterns(forbid=["x"], al=["y"])',
            "*test_x: log_patterns takes forbid=*; got ?'al'?",
        ),
        ("timeout(5)", None),
    ],
)
def test_a_bad_log_patterns_marker_is_a_usage_error_before_anything_runs(
    pytester: pytest.Pytester, marker: str, message: str | None
) -> None:
    pytester.makepyfile(f"import pytest\n\n@pytest.mark.{marker}\ndef test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    if message is None:
        result.assert_outcomes(passed=1)  # a test without a testnet: pytest-timeout's own
        return
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--log-tail", "-1"], "harness_log_tail = '-1': use a number of lines >= 0"),
        (["--log-tail", "2.5"], "harness_log_tail = '2.5': use a number of lines >= 0"),
        (["--timeout-grace", "0"], "harness_timeout_grace = '0': use a number of seconds > 0"),
        (["--timeout-grace", "inf"], "harness_timeout_grace = 'inf': use a number of seconds > 0"),
    ],
)
def test_bad_numbers_are_usage_errors(
    pytester: pytest.Pytester, option: list[str], message: str
) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
