"""The pytest plugin's options, ini keys and markers, exercised through pytester."""

from __future__ import annotations

import httpx
import pytest

from harness.driver import sweep
from harness.node.status import decode_status

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
    pytester.makeini("[pytest]\nharness_run_manual = true\n")
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
    pytester.makeini("[pytest]\nharness_backend = kubernetes\n")
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
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert (
        "`orchestrator_tasks_failed_total` is a prefix of `orchestrator_tasks_failed_total_x`"
        in output
    )
    assert "metric_thresholds takes update_replica=, update_orchestrator=, remove=, " in output
    assert "got ['remov']" in output


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
    artifacts = sorted(p.name for p in (pytester.path / "artifacts").iterdir())
    assert len(artifacts) == 4


def test_keep_testnet_leaves_it_up_and_says_how_to_reach_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = pytester.path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(state))
    pytester.makepyfile(XDIST_SYSTESTS.replace("range(4)", "range(1)"))
    result = pytester.runpytest_subprocess("--keep-testnet", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*kept up (remove with `harness down --all`)*"])
    urls = [line for line in result.stdout.lines if "subnet-0-node-0" in line]
    api = urls[0].split("'api': '")[1].split("'")[0]
    assert decode_status(httpx.get(f"{api}/api/v2/status").content).is_healthy
    # A later run's sweep leaves a kept run alone; `harness down --all` removes it.
    assert sweep() == {}
    (run_id,) = (p.name for p in (state / "runs").iterdir())
    killed = sweep(everything=True)
    assert killed[run_id] >= 4
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{api}/api/v2/status", timeout=1)
