"""A failing system test explains itself, through inner pytest sessions (pytester) on the local
backend and on docker: what happened in pytest's own output, under xdist and in JUnit XML (a
crashed replica), and the log checks (a forbidden line fails a test that passed, an allowed one
does not; patterns from a marker, an option and an ini key; bad ones are usage errors)."""

from __future__ import annotations

from xml.etree import ElementTree

import engines
import pytest
from inner_pytest import BACKENDS, INI, nothing_left, own_state  # noqa: F401 (autouse)

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
    nothing_left()


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
    nothing_left()


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
