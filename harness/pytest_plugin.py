"""pytest plugin (entry point `pytest11`): options, markers, testnet fixtures, metric checks
after every test and an artifact directory per test. A thin adapter over `harness.driver`.

In a test module::

    from harness.pytest_plugin import define_testnet
    testnet = define_testnet(lambda: InternetComputer().add_subnet(...), scope="module")

    @pytest.mark.metric_thresholds(
        update_orchestrator={"orchestrator_processes_start_attempts_total": 2})
    def test_crash_recovery(testnet): ...

Options (each also an ini key `harness_<name>`): `--backend local|docker`, `--keep-testnet`,
`--artifacts-dir DIR`, `--run-manual`.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.driver import (
    BackendOptions,
    InternetComputer,
    MetricThresholds,
    Run,
    Testnet,
    backend_names,
    sweep,
)

run_key = pytest.StashKey[Run]()
artifacts_key = pytest.StashKey[Path]()
kept_key = pytest.StashKey[list[dict[str, object]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "testnet harness")

    def add(option: str, ini: str, help: str, **kwargs: Any) -> None:
        group.addoption(option, dest=ini, help=help, **kwargs)
        if kwargs.get("action") == "store_true":
            parser.addini(ini, help, type="bool", default=None)
        else:
            parser.addini(ini, help, type="string", default=None)

    add(
        "--backend",
        "harness_backend",
        "backend that runs the nodes: local (default), docker or swarm",
        default=None,
        choices=backend_names(),
    )
    add(
        "--keep-testnet",
        "harness_keep_testnet",
        "leave testnets up after the tests and print how to reach them",
        action="store_true",
        default=None,
    )
    add(
        "--artifacts-dir",
        "harness_artifacts_dir",
        "where each test's artifact directory goes (default: artifacts)",
        default=None,
    )
    add(
        "--run-manual",
        "harness_run_manual",
        "also run tests marked `manual`",
        action="store_true",
        default=None,
    )


def _setting(config: pytest.Config, name: str, default: Any) -> Any:
    """CLI value unless unset, else ini value unless unset, else `default`."""
    value = config.getoption(name)
    if value is None:
        value = config.getini(name)
    if value is None or value == "":
        return default
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "systest: a system test that runs a testnet")
    config.addinivalue_line(
        "markers", "manual: a test that runs only with --run-manual (as `manual` in the IC)"
    )
    config.addinivalue_line(
        "markers",
        "metric_thresholds(update_replica={}, update_orchestrator={}, remove=[], "
        "remove_all=False): change the metric checks run after this test",
    )
    backend = _setting(config, "harness_backend", "local")
    if backend not in backend_names():
        raise pytest.UsageError(
            f"harness_backend = {backend!r}: use one of {', '.join(backend_names())}"
        )
    config.stash[artifacts_key] = Path(_setting(config, "harness_artifacts_dir", "artifacts"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _setting(config, "harness_run_manual", False):
        return
    skip = pytest.mark.skip(reason="manual test: run it with --run-manual")
    for item in items:
        if item.get_closest_marker("manual"):
            item.add_marker(skip)


class TestnetFactory:
    """Starts testnets for tests and tears them down (or keeps them with --keep-testnet)."""

    def __init__(self, run: Run, backend: str, keep: bool) -> None:
        self.run = run
        self.backend = backend
        self.keep = keep
        self.options = BackendOptions()
        self.kept: list[Testnet] = []

    def __call__(self, topology: InternetComputer, timeout: float = 60.0) -> Testnet:
        return Testnet(topology, self.run, self.backend, self.options).start(timeout)

    def release(self, testnet: Testnet) -> None:
        if self.keep:
            self.kept.append(testnet)
        else:
            testnet.close()


@pytest.fixture(scope="session")
def harness_run() -> Iterator[Run]:
    """This session's run; leftovers of dead earlier runs are swept first."""
    sweep()
    run = Run.create()
    yield run


@pytest.fixture(scope="session")
def testnet_factory(request: pytest.FixtureRequest, harness_run: Run) -> Iterator[TestnetFactory]:
    config = request.config
    factory = TestnetFactory(
        harness_run,
        _setting(config, "harness_backend", "local"),
        bool(_setting(config, "harness_keep_testnet", False)),
    )
    yield factory
    if factory.kept:
        (harness_run.directory / "keep").write_text("kept by --keep-testnet\n")
        config.stash[kept_key] = [testnet.describe() for testnet in factory.kept]
    else:
        harness_run.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how to reach the testnets that --keep-testnet left up."""
    for described in terminalreporter.config.stash.get(kept_key, []):
        terminalreporter.write_line(
            f"testnet {described['testnet']} kept up (remove with `harness down --all`):"
        )
        for node in described["nodes"]:  # type: ignore[attr-defined]
            terminalreporter.write_line(f"  {node['id']:<24} {node['role']:<12} {node['urls']}")


def define_testnet(
    topology: Callable[[], InternetComputer] | InternetComputer,
    *,
    scope: str = "function",
    timeout: float = 60.0,
) -> Any:
    """A fixture giving tests a started testnet of `topology`, torn down after its scope."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload, untyped-decorator]
    def _testnet(testnet_factory: TestnetFactory) -> Iterator[Testnet]:
        declared = topology() if callable(topology) else copy.deepcopy(topology)
        testnet = testnet_factory(declared, timeout)
        try:
            yield testnet
        finally:
            testnet_factory.release(testnet)

    return _testnet


def _testnets(item: pytest.Item) -> list[Testnet]:
    funcargs = getattr(item, "funcargs", {})
    return [value for value in funcargs.values() if isinstance(value, Testnet)]


def thresholds_for(item: pytest.Item) -> MetricThresholds:
    """The default thresholds changed by the item's `metric_thresholds` markers."""
    thresholds = MetricThresholds.defaults()
    for marker in reversed(list(item.iter_markers("metric_thresholds"))):
        unknown = set(marker.kwargs) - {
            "update_replica",
            "update_orchestrator",
            "remove",
            "remove_all",
        }
        if unknown or marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: metric_thresholds takes update_replica=, update_orchestrator=, "
                f"remove=, remove_all=; got {sorted(unknown) or marker.args}"
            )
        if marker.kwargs.get("remove_all"):
            thresholds.remove_all()
        for name in marker.kwargs.get("remove", []):
            thresholds.remove(name)
        for name, maximum in marker.kwargs.get("update_replica", {}).items():
            thresholds.update_replica_metric(name, maximum)
        for name, maximum in marker.kwargs.get("update_orchestrator", {}).items():
            thresholds.update_orchestrator_metric(name, maximum)
    return thresholds


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After the test body: heal every fault it left (pass or fail), then, if it passed, the
    metric threshold checks on every testnet it used."""
    testnets = _testnets(item)
    try:
        result = yield
    except BaseException as failure:
        for testnet in testnets:
            try:
                testnet.heal_all()
            except Exception as exc:  # the test's own failure stays the one reported
                failure.add_note(f"healing {testnet.testnet_id} afterwards failed too: {exc}")
        raise
    for testnet in testnets:
        testnet.heal_all()
    if testnets:
        thresholds = thresholds_for(item)
        for testnet in testnets:
            testnet.check_metrics(thresholds)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Write the test's artifact directory while its testnets are still up."""
    report = yield
    testnets = _testnets(item)
    if report.when == "call" and testnets:
        directory = item.config.stash[artifacts_key] / _safe_name(item.nodeid)
        summary = [
            f"test: {item.nodeid}",
            f"outcome: {report.outcome}",
            f"duration: {report.duration:.2f}s",
        ]
        if report.longrepr is not None:
            summary += ["", str(report.longrepr)]
        shutil.rmtree(directory, ignore_errors=True)  # a rerun replaces, never mixes
        for testnet in testnets:
            try:
                testnet.collect_artifacts(directory / testnet.testnet_id, summary)
            except Exception as exc:  # artifacts must never hide the test's own outcome
                summary.append(f"collecting artifacts of {testnet.testnet_id} failed: {exc!r}")
        report.sections.append(("harness artifacts", str(directory.resolve())))
    return report


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:180]
