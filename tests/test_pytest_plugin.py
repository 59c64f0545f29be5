"""The pytest plugin through pytester: options, ini keys, markers, kept testnets, artifacts (of
failed starts too) and their JUnit links, xdist, and async tests with pytest-asyncio."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from harness_cli import harness

from harness.driver import sweep
from harness.driver.run import tagged_processes
from harness.node.status import decode_status

# The inner sessions load pytest-asyncio (installed beside the harness) with an ini of their own.
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture(autouse=True)
def inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)


MANUAL_TEST = """
import pytest

@pytest.mark.manual
def test_manual():
    pass

def test_plain():
    pass
"""


def test_manual_tests_are_skipped_unless_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MANUAL_TEST)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*manual test: run it with --run-manual*"])
    pytester.runpytest("--run-manual").assert_outcomes(passed=2)


def test_run_manual_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MANUAL_TEST)
    pytester.makeini(INI + "harness_run_manual = true\n")
    pytester.runpytest().assert_outcomes(passed=2)


def test_markers_are_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.systest
        @pytest.mark.metric_thresholds(remove_all=True)
        def test_marked():
            pass
        """
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_backend_option_is_validated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--backend", "kubernetes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'kubernetes'*"])


def test_backend_ini_is_validated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    pytester.makeini(INI + "harness_backend = kubernetes\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*harness_backend = 'kubernetes': use one of docker, local, swarm*"]
    )


def test_thresholds_marker_builds_the_checked_maps(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from harness.pytest_plugin import thresholds_for

        @pytest.mark.metric_thresholds(
            update_orchestrator={"orchestrator_processes_start_attempts_total": 2},
            remove=["critical_errors"],
        )
        def test_marked(request):
            thresholds = thresholds_for(request.node)
            assert thresholds.orchestrator["orchestrator_processes_start_attempts_total"] == 2
            assert "critical_errors" not in thresholds.replica
            assert thresholds.replica["consensus_invalidated_artifacts"] == 0

        @pytest.mark.metric_thresholds(update_orchestrator={"orchestrator_tasks_failed_total_x": 1})
        def test_not_prefix_free(request):
            thresholds_for(request.node)

        @pytest.mark.metric_thresholds(remov=["critical_errors"])
        def test_typo(request):
            thresholds_for(request.node)

        @pytest.mark.metric_thresholds(update={"ic-gateway": {"ic_gateway_http_total": 9}})
        def test_any_program(request):
            assert thresholds_for(request.node).programs["ic-gateway"] == {
                "ic_gateway_http_total": 9
            }

        @pytest.mark.metric_thresholds(update={"nginx": {"requests": 1}})
        def test_unknown_program(request):
            thresholds_for(request.node)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=3)
    output = result.stdout.str()
    assert (
        "`orchestrator_tasks_failed_total` is a prefix of `orchestrator_tasks_failed_total_x`"
        in output
    )
    assert "metric_thresholds takes update=, update_replica=, update_orchestrator=, " in output
    assert "got ['remov']" in output
    assert "metric_thresholds: no node program 'nginx' serves metrics to check" in output


XDIST_SYSTESTS = """
import pytest
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(2))
)

@pytest.mark.parametrize("i", range(4))
def test_healthy(testnet, i):
    for node in testnet.nodes():
        assert node.status().is_healthy
"""


def test_xdist_workers_do_not_fight_over_addresses(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(XDIST_SYSTESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    artifacts = pytester.path / "artifacts"
    tests = sorted(p for p in artifacts.iterdir() if p.is_dir())
    assert len(tests) == 4
    assert all((test / "report.html").is_file() for test in tests)
    # One index, by the controller, of every worker's tests.
    index = (artifacts / "index.html").read_text()
    assert index.count("<tr class='test'>") == 4
    assert "4 passed" in index


def test_keep_testnet_leaves_it_up_and_says_how_to_reach_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = pytester.path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(state))
    try:
        pytester.makepyfile(XDIST_SYSTESTS.replace("range(4)", "range(1)"))
        result = pytester.runpytest_subprocess("--keep-testnet", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            [
                "*kept up: `harness ls` lists it, `harness down ic-0` removes it*",
                "*subnet-0-node-0*",
            ]
        )
        api = next(line.split()[1] for line in result.stdout.lines if line.startswith("    api "))
        assert decode_status(httpx.get(f"{api}/api/v2/status").content).is_healthy
        # A later run's sweep leaves a kept run alone; `harness ls` shows it, healthy and kept.
        assert sweep() == {}
        (run_id,) = (p.name for p in (state / "runs").iterdir())
        listed = json.loads(harness("ls", "--json").stdout)
        kept = [(t["testnet"], t["held_by"], t["kept"]) for t in listed]
        assert kept == [("ic-0", "kept", True)]
        assert [node["healthy"] for node in listed[0]["nodes"]] == [True, True]
        # `harness down ic-0` removes it: its processes, its run.
        down = harness("down", "ic-0")
        assert down.stdout == "removed testnet ic-0\n", down.stderr
        assert tagged_processes() == {}
        assert not (state / "runs" / run_id).exists()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{api}/api/v2/status", timeout=1)
        assert harness("ls").stdout.startswith("no testnets")
    finally:
        sweep(everything=True)  # whatever a failing assertion left up


def _junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """Test name -> its <property> name/value pairs, from a JUnit XML file."""
    tree = ElementTree.parse(path)
    return {
        case.attrib["name"]: {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}
        for case in tree.iter("testcase")
    }


FAILING_START = """
from harness.driver import InternetComputer
from harness.pytest_plugin import define_testnet

# An API boundary node without subnets never gets healthy (no replica to route to).
testnet = define_testnet(
    lambda: InternetComputer().with_name("nosubnets").with_api_boundary_nodes(1), timeout=3
)

def test_never_runs(testnet):
    pass
"""


def test_a_failed_start_leaves_artifacts_that_junit_links(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(pytester.path / "state"))
    pytester.makepyfile(FAILING_START)
    result = pytester.runpytest_subprocess("--junitxml=junit.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*artifacts of the failed start: *nosubnets-0*",
            "*- harness: what happened -*",
            "testnet nosubnets-0 (local backend): * events",
            "*api-bn-0 ic-boundary * ic-boundary started (pid *)",
            "artifacts: *test_never_runs",
        ]
    )
    where = Path(
        _junit_properties(pytester.path / "junit.xml")["test_never_runs"]["harness_artifacts"]
    )
    assert (
        where
        == pytester.path
        / "artifacts"
        / "test_a_failed_start_leaves_artifacts_that_junit_links.py_test_never_runs"
    )
    error = ElementTree.parse(pytester.path / "junit.xml").find(".//testcase/error")
    assert error is not None and "harness: what happened" in (error.text or "")
    summary = (where / "nosubnets-0" / "summary.txt").read_text()
    assert "the start failed" in summary and "ic-boundary boundary: 503" in summary
    assert (where / "nosubnets-0" / "nodes" / "api-bn-0" / "ic-boundary.log").stat().st_size > 0
    assert sweep(everything=True) == {}  # the failed start left nothing running


def test_every_tested_testnet_s_artifacts_reach_junit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(XDIST_SYSTESTS.replace("range(4)", "range(1)"))
    result = pytester.runpytest_subprocess("--junitxml=junit.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    where = Path(
        _junit_properties(pytester.path / "junit.xml")["test_healthy[0]"]["harness_artifacts"]
    )
    (testnet_dir,) = [p for p in where.iterdir() if p.is_dir()]
    assert "outcome: passed" in (testnet_dir / "summary.txt").read_text()
    assert (where / "report.html").is_file()


ASYNC_SYSTEST = """
import pytest
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(
        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway()
    ),
    scope="module",
)

MARKER
async def test_every_node_at_once(testnet):
    health = await testnet.aio.await_all_healthy(timeout=30)
    assert [h.healthy for h in health] == [True, True]
    report = await testnet.aio.load(requests=20, concurrency=4)
    assert (report.ok, report.failed) == (40, 0), report.summary()

def test_a_sync_test_beside_it(testnet):
    assert all(node.status().is_healthy for node in testnet.nodes())
"""


@pytest.mark.parametrize(("mode", "marker"), [("strict", "@pytest.mark.asyncio"), ("auto", "")])
def test_async_tests_work_in_both_pytest_asyncio_modes(
    pytester: pytest.Pytester, mode: str, marker: str
) -> None:
    pytester.makepyfile(ASYNC_SYSTEST.replace("MARKER", marker))
    result = pytester.runpytest_subprocess(
        f"--asyncio-mode={mode}",
        "-p", "no:cacheprovider",
        "-W", "error::pytest.PytestUnraisableExceptionWarning",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    # The plugin's after-test work (heal, metric checks, artifacts) ran for the async test too.
    written = sorted(p.name for p in (pytester.path / "artifacts").iterdir())
    assert any(name.endswith("test_every_node_at_once") for name in written), written


PARTITION_WITHOUT_ROOT = """
import pytest
from harness.driver import InternetComputer, Subnet, SubnetType
from harness.driver.backends import local
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
)

@pytest.fixture(autouse=True)
def not_root(monkeypatch):
    monkeypatch.setattr(local.os, "geteuid", lambda: 1000)

def test_partition(testnet):
    testnet.nodes()[0].partition()
    raise AssertionError("not reached: the partition cannot be made")

def test_pause(testnet):
    node = testnet.nodes()[0]
    node.pause()
    node.resume()
"""


def test_a_fault_the_backend_cannot_do_here_skips_the_test_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(PARTITION_WITHOUT_ROOT)
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*SKIPPED*partitions on the local backend need root (iptables rules)*"]
    )
