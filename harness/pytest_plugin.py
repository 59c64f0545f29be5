"""pytest plugin (entry point `pytest11`): options, markers, testnet fixtures, metric checks
after every test and an artifact directory per test. A thin adapter over `harness.driver`.

In a test module::

    from harness.pytest_plugin import define_testnet
    testnet = define_testnet(lambda: InternetComputer().add_subnet(...), scope="module")

    @pytest.mark.metric_thresholds(
        update_orchestrator={"orchestrator_processes_start_attempts_total": 2})
    def test_crash_recovery(testnet): ...

Options (each also an ini key `harness_<name>`): `--backend local|docker|swarm`,
`--spawn fork|exec`, `--keep-testnet`, `--prometheus`, `--artifacts-dir DIR`, `--run-manual`.
Each test's artifact directory (also of a testnet whose start failed) is in its report and, as
the property `harness_artifacts`, in JUnit XML. A test that used a testnet gets `report.html`
there (its timeline and plots, `harness.driver.report`, drawn from what the testnet's
Prometheus scraped when one ran, else from the harness's sampler); `index.html` in the
artifacts root lists every test of the session with its outcome, duration and report. Async
tests (pytest-asyncio, strict or auto mode) use the same fixtures.
"""

from __future__ import annotations

import copy
import re
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.driver import (
    SPAWN_MODES,
    BackendOptions,
    CapabilityMissing,
    InternetComputer,
    MetricThresholds,
    Run,
    Testnet,
    backend_names,
    sweep,
)
from harness.driver.listing import testnet_lines
from harness.driver.report import (
    INDEX_FILE,
    REPORT_FILE,
    Collected,
    ReportWriter,
    TestRecord,
    render_index,
    testnet_report,
)

run_key = pytest.StashKey[Run]()
artifacts_key = pytest.StashKey[Path]()
kept_key = pytest.StashKey[list[dict[str, object]]]()
# Where the start of a testnet that failed left its artifacts, by id() of the error raised.
failed_starts_key = pytest.StashKey[dict[int, Path]]()
ARTIFACTS_PROPERTY = "harness_artifacts"
started_key = pytest.StashKey[float]()
reports_key = pytest.StashKey[ReportWriter]()


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
        "--spawn",
        "harness_spawn",
        "how node programs start: fork (default: from a fork server that imported them) or "
        "exec (each a fresh interpreter)",
        default=None,
        choices=SPAWN_MODES,
    )
    add(
        "--keep-testnet",
        "harness_keep_testnet",
        "leave testnets up after the tests and print how to reach them",
        action="store_true",
        default=None,
    )
    add(
        "--prometheus",
        "harness_prometheus",
        "run a Prometheus beside every testnet (as with_prometheus() does); the tests' reports "
        "then plot what it scraped",
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
    spawn = _setting(config, "harness_spawn", "fork")
    if spawn not in SPAWN_MODES:
        raise pytest.UsageError(f"harness_spawn = {spawn!r}: use one of {', '.join(SPAWN_MODES)}")
    config.stash[artifacts_key] = Path(_setting(config, "harness_artifacts_dir", "artifacts"))
    config.stash[failed_starts_key] = {}
    config.stash[reports_key] = ReportWriter()
    config.pluginmanager.register(SessionIndex(config), "harness-session-index")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The test's window starts here: a testnet its fixtures start is part of it."""
    item.stash[started_key] = time.time()


class SessionIndex:
    """Keeps every test's outcome (the first that is not a pass wins) and its whole duration,
    and at the end of the session writes `index.html` (not on an xdist worker: the controller
    gets every worker's results and writes it once), after waiting for the reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, TestRecord] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        before = self.records.get(report.nodeid)
        outcome: str = report.outcome
        if before is not None and before.outcome != "passed":
            outcome = before.outcome
        if report.when == "setup" and report.failed:
            outcome = "error"
        duration = (before.duration if before else 0.0) + report.duration
        self.records[report.nodeid] = TestRecord(report.nodeid, outcome, duration)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = self.config
        config.stash[reports_key].close()
        if hasattr(config, "workerinput") or not self.records:
            return
        root = config.stash[artifacts_key]
        listed = []
        for record in self.records.values():
            report = artifacts_dir(config, record.nodeid) / REPORT_FILE
            listed.append(
                TestRecord(record.nodeid, record.outcome, record.duration, report)
                if report.is_file()
                else record
            )
        root.mkdir(parents=True, exist_ok=True)
        (root / INDEX_FILE).write_text(render_index(listed, root), encoding="utf-8")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _setting(config, "harness_run_manual", False):
        return
    skip = pytest.mark.skip(reason="manual test: run it with --run-manual")
    for item in items:
        if item.get_closest_marker("manual"):
            item.add_marker(skip)


class TestnetFactory:
    """Starts testnets for tests and tears them down (or keeps them with --keep-testnet)."""

    def __init__(
        self, run: Run, backend: str, keep: bool, spawn: str = "fork", prometheus: bool = False
    ) -> None:
        self.run = run
        self.backend = backend
        self.keep = keep
        self.options = BackendOptions(spawn=spawn)
        self.prometheus = prometheus
        self.kept: list[Testnet] = []

    def __call__(
        self,
        topology: InternetComputer,
        timeout: float = 60.0,
        failure_artifacts: Path | None = None,
    ) -> Testnet:
        """A started testnet; if its start fails, the artifacts go into `failure_artifacts`
        (a folder named after the testnet in it). With --prometheus, a Prometheus runs beside
        it (the test's own topology is left as it was)."""
        if self.prometheus and not topology.prometheus:
            topology = copy.copy(topology).with_prometheus()
        testnet = Testnet(topology, self.run, self.backend, self.options, sample=True)
        where = failure_artifacts / testnet.testnet_id if failure_artifacts else None
        return testnet.start(timeout, failure_artifacts=where)

    def release(self, testnet: Testnet) -> None:
        if self.keep:
            self.kept.append(testnet)
        else:
            testnet.close()


@pytest.fixture(scope="session")
def harness_run() -> Iterator[Run]:
    """This session's run; leftovers of dead earlier runs are swept first."""
    sweep()
    run = Run.create("pytest")
    yield run


@pytest.fixture(scope="session")
def testnet_factory(request: pytest.FixtureRequest, harness_run: Run) -> Iterator[TestnetFactory]:
    config = request.config
    factory = TestnetFactory(
        harness_run,
        _setting(config, "harness_backend", "local"),
        bool(_setting(config, "harness_keep_testnet", False)),
        _setting(config, "harness_spawn", "fork"),
        bool(_setting(config, "harness_prometheus", False)),
    )
    yield factory
    if factory.kept:
        harness_run.keep("kept by --keep-testnet")
        config.stash[kept_key] = [testnet.describe() for testnet in factory.kept]
    else:
        harness_run.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how to reach the testnets that --keep-testnet left up."""
    for described in terminalreporter.config.stash.get(kept_key, []):
        testnet_id = described["testnet"]
        terminalreporter.write_line(
            f"kept up: `harness ls` lists it, `harness down {testnet_id}` removes it"
        )
        for line in testnet_lines(described):
            terminalreporter.write_line(line)


def define_testnet(
    topology: Callable[[], InternetComputer] | InternetComputer,
    *,
    scope: str = "function",
    timeout: float = 60.0,
) -> Any:
    """A fixture giving tests a started testnet of `topology`, torn down after its scope."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload, untyped-decorator]
    def _testnet(
        request: pytest.FixtureRequest, testnet_factory: TestnetFactory
    ) -> Iterator[Testnet]:
        declared = topology() if callable(topology) else copy.deepcopy(topology)
        # A start that fails leaves its artifacts where the test's (or module's) would go.
        artifacts = artifacts_dir(request.config, request.node.nodeid)
        shutil.rmtree(artifacts, ignore_errors=True)
        try:
            testnet = testnet_factory(declared, timeout, failure_artifacts=artifacts)
        except Exception as failure:
            if artifacts.is_dir():
                request.config.stash[failed_starts_key][id(failure)] = artifacts
            raise
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
    metric threshold checks on every testnet it used. A test that asked for a fault its
    backend cannot do here (`CapabilityMissing`) is skipped with the reason."""
    testnets = _testnets(item)
    try:
        result = yield
    except CapabilityMissing as missing:  # the backend cannot do what the test needs here
        for testnet in testnets:
            testnet.heal_all()
        raise pytest.skip.Exception(str(missing), _use_item_location=True) from None
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
    if report.when == "setup" and report.failed and call.excinfo is not None:
        failed_start = item.config.stash[failed_starts_key].get(id(call.excinfo.value))
        if failed_start is not None:
            _link_artifacts(item, report, failed_start)
        return report
    testnets = _testnets(item)
    if report.when == "call" and testnets:
        directory = artifacts_dir(item.config, item.nodeid)
        summary = [
            f"test: {item.nodeid}",
            f"outcome: {report.outcome}",
            f"duration: {report.duration:.2f}s",
        ]
        if report.longrepr is not None:
            summary += ["", str(report.longrepr)]
        shutil.rmtree(directory, ignore_errors=True)  # a rerun replaces, never mixes
        start = item.stash.get(started_key, time.time() - report.duration)
        end = time.time()
        collected = []
        for testnet in testnets:
            try:
                where = testnet.collect_artifacts(directory / testnet.testnet_id, summary)
                samples, sampled_by = testnet.metric_samples(start, end)  # while it is up
            except Exception as exc:  # artifacts must never hide the test's own outcome
                summary.append(f"collecting artifacts of {testnet.testnet_id} failed: {exc!r}")
            else:
                collected.append(Collected(testnet, where, samples, sampled_by))
        _link_artifacts(item, report, directory)
        failure = str(report.longrepr) if report.longrepr is not None else ""
        item.config.stash[reports_key].submit(
            directory,
            lambda: testnet_report(
                item.nodeid, report.outcome, end - start, start, end, collected, failure
            ),
        )
    return report


def _link_artifacts(item: pytest.Item, report: pytest.TestReport, directory: Path) -> None:
    """Name the artifact directory in the report and in the JUnit XML (a `harness_artifacts`
    property: junitxml writes the item's user properties with the teardown report)."""
    where = str(directory.resolve())
    report.sections.append(("harness artifacts", where))
    if (ARTIFACTS_PROPERTY, where) not in item.user_properties:
        item.user_properties.append((ARTIFACTS_PROPERTY, where))


def artifacts_dir(config: pytest.Config, nodeid: str) -> Path:
    """The artifact directory of a test (or of a module, for a module-scoped testnet)."""
    return config.stash[artifacts_key] / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:180]
