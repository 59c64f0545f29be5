"""The pytest plugin proper (registered by `harness.pytest_plugin`, the entry point's light
module): options, markers, testnet fixtures, the checks after every test (metrics and logs),
time limits, and what a test leaves: an artifact directory, a report and, when it fails, an
explanation in pytest's own output. A thin adapter over `harness.driver`.

In a test module::

    from harness.pytest_plugin import define_testnet
    testnet = define_testnet(lambda: InternetComputer().add_subnet(...), scope="module")

    @pytest.mark.metric_thresholds(
        update_orchestrator={"orchestrator_processes_start_attempts_total": 2})
    @pytest.mark.log_patterns(forbid=[r"upstream timed out"], allow=[r"ValueError: on purpose"])
    @pytest.mark.timeout(120)
    def test_crash_recovery(testnet): ...

Options (each also an ini key `harness_<name>`): `--backend local|docker|swarm`,
`--spawn fork|exec`, `--keep-testnet` (`--keep-ttl DURATION`), `--testnet ID` (attach to a
running testnet: matching fixtures use it, reset before each test; not under xdist),
`--prometheus`, `--artifacts-dir DIR`, `--run-manual`, `--log-tail N`, `--log-forbid REGEX`
and `--log-allow REGEX` (repeatable; ini: one per line), `--timeout-grace SECONDS`. Time
limits are pytest-timeout's settings (`harness.pytest_plugin.timelimit`); Ctrl-C and SIGTERM:
`harness.pytest_plugin.interrupts`.

Before a test on a reused testnet (attached, or of a fixture wider than the test), the testnet
is reset (`Testnet.reset`). After a test with a testnet: its faults are healed; its artifacts
are collected while its testnets are up (every node's logs and metrics, the registry, the
events); if it passed, the metric checks and the log checks run (`harness.driver.logcheck`: a
Python traceback, "This is a bug", "panicked" or a CRITICAL record logged during the test
fails it). The artifact directory
(one per attempt under pytest-rerunfailures) gets `report.html` (`harness.driver.report`);
`index.html` in the artifacts root lists every test and attempt. A test that fails or errors
gets a section "harness: what happened" (`harness.driver.explain`) in its failure text, so in
the terminal, under xdist and in JUnit XML, which also names the directory in a
`harness_artifacts` property. Async tests (pytest-asyncio, strict or auto mode) use the same
fixtures.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.driver import (
    SPAWN_MODES,
    BackendOptions,
    CapabilityMissing,
    HarnessError,
    InternetComputer,
    LogCheckFailed,
    MetricCheckFailed,
    MetricThresholds,
    Run,
    Testnet,
    backend_names,
    sweep,
)
from harness.driver.explain import TestnetEvidence, explain
from harness.driver.lifetime import describe_duration, parse_duration, set_lifetime
from harness.driver.listing import testnet_lines
from harness.driver.logcheck import LogMarks, LogPatterns, LogScan, logs_in, scan
from harness.driver.report import (
    INDEX_FILE,
    REPORT_FILE,
    Collected,
    TestRecord,
    render_index,
    report_page,
)
from harness.driver.report_worker import RENDERER_SOCKET, ReportWriter
from harness.driver.testnet import EVENTS_FILE
from harness.driver.testnets import attach, check_attachable
from harness.driver.timeline import journal_events
from harness.driver.topology import topology_differences
from harness.pytest_plugin.interrupts import Interrupts
from harness.pytest_plugin.timelimit import (
    DEFAULT_GRACE,
    PytestTimeoutHooks,
    TimeLimits,
    uses_testnet,
)

log = logging.getLogger(__name__)

artifacts_key = pytest.StashKey[Path]()
kept_key = pytest.StashKey[list[dict[str, object]]]()
attached_key = pytest.StashKey[str]()
# Where the start of a testnet that failed left its artifacts, by id() of the error raised.
failed_starts_key = pytest.StashKey[dict[int, Path]]()
ARTIFACTS_PROPERTY = "harness_artifacts"
SECTION = "harness: what happened"
EXPLANATION_FILE = "explanation.txt"
reports_key = pytest.StashKey[ReportWriter]()
limits_key = pytest.StashKey[TimeLimits]()
interrupts_key = pytest.StashKey[Interrupts]()
factory_key = pytest.StashKey["TestnetFactory"]()
DEFAULT_LOG_TAIL = 20
DEFAULT_KEEP_TTL = "2h"


@dataclass
class Window:
    """One test's window: when it started, where the logs of the testnets already up stood
    then, and what was collected of its testnets when it ended."""

    start: float
    marks: dict[str, LogMarks]
    directory: Path | None = None
    end: float | None = None
    collected: list[Collected] = field(default_factory=list)
    scans: dict[str, LogScan] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


window_key = pytest.StashKey[Window]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "testnet harness")

    def add(option: str, ini: str, help: str, **kwargs: Any) -> None:
        group.addoption(option, dest=ini, help=help, **kwargs)
        if kwargs.get("action") == "store_true":
            parser.addini(ini, help, type="bool", default=None)
        elif kwargs.get("action") == "append":
            parser.addini(ini, help + " (one per line)", type="linelist", default=[])
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
        "--keep-ttl",
        "harness_keep_ttl",
        f"how long a testnet --keep-testnet leaves up lives (30m, 2h, 1d; 0: until harness "
        f"down; default {DEFAULT_KEEP_TTL}); a session attached to it renews it",
        default=None,
    )
    add(
        "--testnet",
        "harness_testnet",
        "run the tests on this running testnet (an id of `harness ls`: one that `harness up "
        "--detach` or --keep-testnet left up) instead of starting testnets: every testnet "
        "fixture whose topology matches attaches to it, and it is reset before each test; it "
        "stays up",
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
    add(
        "--timeout-grace",
        "harness_timeout_grace",
        "seconds a test over its time limit has to stop before a watchdog collects its "
        "artifacts, tears its testnets down and ends the session (default 30)",
        default=None,
    )
    add(
        "--log-tail",
        "harness_log_tail",
        f"lines of each log worth reading that a failed test's explanation shows (default "
        f"{DEFAULT_LOG_TAIL})",
        default=None,
    )
    add(
        "--log-forbid",
        "harness_log_forbid",
        "a regex no node program may log during a test, besides the defaults (a Python "
        "traceback, 'This is a bug', 'panicked', CRITICAL); repeatable",
        action="append",
        default=None,
    )
    add(
        "--log-allow",
        "harness_log_allow",
        "a regex that lets a line through the log checks; repeatable",
        action="append",
        default=None,
    )


def _keep_ttl(config: pytest.Config) -> float | None:
    text = str(_setting(config, "harness_keep_ttl", DEFAULT_KEEP_TTL))
    try:
        return parse_duration(text, "harness_keep_ttl =")
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


def _check_attach(config: pytest.Config) -> Path | None:
    """--testnet names a testnet that is up, and the session has one process to run tests;
    the testnet's directory."""
    testnet_id = _setting(config, "harness_testnet", None)
    if not testnet_id:
        return None
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        raise pytest.UsageError(
            f"harness_testnet = {testnet_id}: one testnet runs one test at a time, so it cannot "
            "serve several xdist workers; run without -n (or -n 0), or leave out --testnet to "
            "give every worker testnets of its own"
        )
    try:
        return check_attachable(testnet_id).directory
    except HarnessError as exc:
        raise pytest.UsageError(f"harness_testnet = {testnet_id}: {exc}") from None


def _setting(config: pytest.Config, name: str, default: Any) -> Any:
    """CLI value unless unset, else ini value unless unset, else `default`."""
    value = config.getoption(name)
    if value is None:
        value = config.getini(name)
    if value is None or value == "" or value == []:
        return default
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "systest: a system test that runs a testnet")
    config.addinivalue_line(
        "markers", "manual: a test that runs only with --run-manual (as `manual` in the IC)"
    )
    config.addinivalue_line(
        "markers",
        "metric_thresholds(update={program: {metric: max}}, update_replica={}, "
        "update_orchestrator={}, remove=[], remove_all=False): change the metric checks run "
        "after this test",
    )
    config.addinivalue_line(
        "markers",
        "log_patterns(forbid=[], allow=[], defaults=True): change the log checks run after "
        "this test (regexes; defaults=False drops the default forbidden patterns)",
    )
    backend = _setting(config, "harness_backend", "local")
    if backend not in backend_names():
        raise pytest.UsageError(
            f"harness_backend = {backend!r}: use one of {', '.join(backend_names())}"
        )
    spawn = _setting(config, "harness_spawn", "fork")
    if spawn not in SPAWN_MODES:
        raise pytest.UsageError(f"harness_spawn = {spawn!r}: use one of {', '.join(SPAWN_MODES)}")
    _log_tail(config)
    _session_log_patterns(config)
    attached = _check_attach(config)
    _keep_ttl(config)
    config.stash[artifacts_key] = Path(_setting(config, "harness_artifacts_dir", "artifacts"))
    config.stash[failed_starts_key] = {}
    # Attached: the testnet's renderer, warm, if it has one; else one of the session's own,
    # started now: its tests' reports are due in a second or two.
    reports = config.stash[reports_key] = ReportWriter(
        attached / RENDERER_SOCKET if attached is not None else None
    )
    if attached is not None and not config.option.collectonly:
        reports.start()
    config.stash[interrupts_key] = Interrupts()
    limits = config.stash[limits_key] = TimeLimits(config, _grace(config), _stuck)
    config.pluginmanager.register(SessionIndex(config), "harness-session-index")
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(PytestTimeoutHooks(limits), "harness-time-limits")


def _number(config: pytest.Config, name: str, default: float, what: str, valid: Any) -> float:
    """A numeric setting (`_setting`), or a usage error saying what it must be."""
    value = _setting(config, name, default)
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not valid(number):
        raise pytest.UsageError(f"{name} = {value!r}: use {what}")
    return number


def _grace(config: pytest.Config) -> float:
    return _number(
        config, "harness_timeout_grace", DEFAULT_GRACE, "a number of seconds > 0", lambda n: n > 0
    )


def _log_tail(config: pytest.Config) -> int:
    return int(
        _number(
            config,
            "harness_log_tail",
            DEFAULT_LOG_TAIL,
            "a number of lines >= 0",
            lambda n: n >= 0 and n == int(n),
        )
    )


def _session_log_patterns(config: pytest.Config) -> LogPatterns:
    try:
        return LogPatterns.build(
            _setting(config, "harness_log_forbid", []), _setting(config, "harness_log_allow", [])
        )
    except HarnessError as exc:
        raise pytest.UsageError(f"harness_log_forbid / harness_log_allow: {exc}") from None


def log_patterns_for(item: pytest.Item) -> LogPatterns:
    """The session's log patterns changed by the item's `log_patterns` markers."""
    config = item.config
    forbid: list[str] = list(_setting(config, "harness_log_forbid", []))
    allow: list[str] = list(_setting(config, "harness_log_allow", []))
    defaults = True
    for marker in item.iter_markers("log_patterns"):
        unknown = set(marker.kwargs) - {"forbid", "allow", "defaults"}
        if unknown or marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: log_patterns takes forbid=[...], allow=[...], defaults=; got "
                f"{sorted(unknown) or marker.args}"
            )
        forbid += list(marker.kwargs.get("forbid", []))
        allow += list(marker.kwargs.get("allow", []))
        defaults = defaults and bool(marker.kwargs.get("defaults", True))
    try:
        return LogPatterns.build(forbid, allow, defaults)
    except HarnessError as exc:
        raise pytest.UsageError(f"{item.nodeid}: log_patterns: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The test's window starts here: a testnet its fixtures start is part of it, and the logs
    of those already up are checked from where they stand now. Its time limit starts too."""
    factory = item.config.stash.get(factory_key, None)
    # Only a test that uses testnets has log checks, and a time limit of the harness's.
    live = factory.live if factory is not None and uses_testnet(item) else []
    window = item.stash[window_key] = Window(time.time(), {})
    limits = item.config.stash[limits_key]
    if uses_testnet(item) and not limits.armed:
        limits.arm(item)
    if factory is not None:
        factory.window = window
        # A testnet up from an earlier test (of a wider fixture, or attached to) that this
        # one uses is reset first, as its fixture resets one it attaches to.
        for testnet in factory.used_by(item):
            factory.reset(testnet)
    for testnet in live:
        window.marks.setdefault(testnet.testnet_id, _marks(testnet))


def _marks(testnet: Testnet) -> LogMarks:
    """Where the testnet's logs stand; where that cannot be read, their starts (the log checks
    then see more lines than the test's, never fewer)."""
    try:
        return testnet.log_marks()
    except Exception as exc:
        log.warning("the log marks of %s could not be read: %r", testnet.testnet_id, exc)
        return {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """The test is over, whatever happened (a setup that failed too): its clock stops."""
    try:
        return (yield)
    finally:
        item.config.stash[limits_key].disarm()


class SessionIndex:
    """Keeps every attempt of every test: its outcome (the first that is not a pass wins) and
    its whole duration, and at the end of the session writes `index.html` (not on an xdist
    worker: the controller gets every worker's results and writes it once), after waiting for
    the reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[tuple[str, int], TestRecord] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        attempt = int(getattr(report, "rerun", 0) or 0) + 1
        key = (report.nodeid, attempt)
        before = self.records.get(key)
        outcome: str = report.outcome
        if before is not None and before.outcome not in ("passed", "skipped"):
            outcome = before.outcome
        if report.when == "setup" and report.failed:
            outcome = "error"
        duration = (before.duration if before else 0.0) + report.duration
        self.records[key] = TestRecord(report.nodeid, outcome, duration)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = self.config
        config.stash[reports_key].close()
        if hasattr(config, "workerinput") or not self.records:
            return
        root = config.stash[artifacts_key]
        attempts = {nodeid for nodeid, attempt in self.records if attempt > 1}
        listed = []
        for (nodeid, attempt), record in self.records.items():
            name = f"{nodeid} (attempt {attempt})" if nodeid in attempts else nodeid
            report = artifacts_dir(config, nodeid, attempt) / REPORT_FILE
            listed.append(
                TestRecord(name, record.outcome, record.duration, report)
                if report.is_file()
                else TestRecord(name, record.outcome, record.duration)
            )
        root.mkdir(parents=True, exist_ok=True)
        (root / INDEX_FILE).write_text(render_index(listed, root), encoding="utf-8")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After an interrupt, exit as `harness up` does: 130 (SIGINT) or 143 (SIGTERM)."""
    interrupts = session.config.stash.get(interrupts_key, None)
    if interrupts is not None:
        session.exitstatus = interrupts.exit_status(session.exitstatus)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the log checks' markers before anything runs; skip manual tests unless asked."""
    for item in items:
        if item.get_closest_marker("log_patterns"):
            log_patterns_for(item)
    if _setting(config, "harness_run_manual", False):
        return
    skip = pytest.mark.skip(reason="manual test: run it with --run-manual")
    for item in items:
        if item.get_closest_marker("manual"):
            item.add_marker(skip)


class TestnetFactory:
    """Starts testnets for tests and tears them down (or keeps them with --keep-testnet); with
    --testnet, attaches to that running testnet instead, once, and resets it for every test."""

    def __init__(
        self,
        run: Run,
        backend: str,
        keep: bool,
        spawn: str = "fork",
        prometheus: bool = False,
        attach: str | None = None,
    ) -> None:
        self.run = run
        self.backend = backend
        self.keep = keep
        self.options = BackendOptions(spawn=spawn)
        self.prometheus = prometheus
        self.attach_id = attach
        self.attached: Testnet | None = None
        self.kept: list[Testnet] = []
        self.live: list[Testnet] = []
        self.fixtures: dict[str, str] = {}  # testnet id -> the fixture that gave it
        self.window: Window | None = None  # the running test's

    def __call__(
        self,
        topology: InternetComputer,
        timeout: float = 60.0,
        failure_artifacts: Path | None = None,
        fixture: str = "",
    ) -> Testnet:
        """A started testnet; if its start fails, the artifacts go into `failure_artifacts`
        (a folder named after the testnet in it). With --prometheus, a Prometheus runs beside
        it (the test's own topology is left as it was). With --testnet, the testnet attached
        to, reset, if its topology is `topology`; `HarnessError` naming the differences if
        not (a test failure without a traceback). `fixture` names the fixture that asks
        (which tests use the testnet)."""
        if self.prometheus and not topology.prometheus:
            topology = copy.copy(topology).with_prometheus()
        if self.attach_id is not None:
            testnet = self._attach(topology, fixture)
            self.reset(testnet)
        else:
            testnet = Testnet(topology, self.run, self.backend, self.options, sample=True)
            where = failure_artifacts / testnet.testnet_id if failure_artifacts else None
            testnet.start(timeout, failure_artifacts=where)
        self.live.append(testnet)
        self.fixtures[testnet.testnet_id] = fixture
        return testnet

    def _attach(self, topology: InternetComputer, fixture: str) -> Testnet:
        assert self.attach_id is not None
        if self.attached is None:
            self.attached = attach(self.attach_id, f"pytest (pid {os.getpid()})", sample=True)
        differences = topology_differences(topology, self.attached.topology)
        if differences:  # the message says it all: no traceback through the fixtures
            pytest.fail(
                f"--testnet {self.attach_id}: its topology is not the one "
                f"{f'the fixture `{fixture}`' if fixture else 'the test'} declares:\n"
                + "\n".join(f"  - {difference}" for difference in differences)
                + "\nrun these tests without --testnet, or on a testnet of that topology "
                "(harness up --detach --topology ...)",
                pytrace=False,
            )
        return self.attached

    def used_by(self, item: pytest.Item) -> list[Testnet]:
        """The live testnets that `item` uses (through the fixtures that gave them)."""
        names = set(getattr(item, "fixturenames", ()))
        return [t for t in self.live if self.fixtures.get(t.testnet_id) in names]

    def reset(self, testnet: Testnet) -> None:
        """Reset a reused testnet; the running test's log checks start after the reset."""
        testnet.reset()
        if self.window is not None:
            self.window.marks[testnet.testnet_id] = _marks(testnet)

    def release(self, testnet: Testnet) -> None:
        if testnet in self.live:
            self.live.remove(testnet)
        if testnet is self.attached:
            return  # let go of at the session's end
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
        _setting(config, "harness_testnet", None),
    )
    config.stash[factory_key] = factory
    config.stash[interrupts_key].install()
    config.stash[reports_key].start()  # warms up while the first testnet starts
    yield factory
    _end_testnets(config)


def _end_testnets(config: pytest.Config) -> None:
    """Keep the session's testnets (--keep-testnet) or remove them and its run, once: when the
    factory's fixture is torn down, or at the very end where that teardown never ran (an older
    pytest-rerunfailures, 14.0, leaves the session's fixtures without it after a rerun)."""
    factory = config.stash.get(factory_key, None)
    if factory is None:
        return
    del config.stash[factory_key]
    interrupts = config.stash[interrupts_key]
    try:
        if factory.attached is not None:
            factory.attached.close()  # lets go of it: it stays up
            config.stash[attached_key] = factory.attached.testnet_id
        if factory.kept and interrupts.received is None:
            factory.run.keep("kept by --keep-testnet")
            ttl = _keep_ttl(config)
            kept = []
            for testnet in factory.kept:
                described = testnet.describe()
                if ttl is not None:
                    described["expires"] = set_lifetime(factory.run, testnet.testnet_id, ttl)
                kept.append(described)
            config.stash[kept_key] = kept
        else:
            for testnet in [*factory.live, *factory.kept]:
                testnet.close()
            factory.run.close()
    finally:
        interrupts.restore()


def pytest_unconfigure(config: pytest.Config) -> None:
    _end_testnets(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how to reach the testnets that --keep-testnet left up, and which one --testnet
    attached to."""
    attached = terminalreporter.config.stash.get(attached_key, None)
    if attached is not None:
        terminalreporter.write_line(
            f"attached to testnet {attached}, left up: `harness down {attached}` removes it"
        )
    for described in terminalreporter.config.stash.get(kept_key, []):
        testnet_id = described["testnet"]
        until = described.get("expires")
        lifetime = (
            f" (or, unless a session attached to it renews it, its end in "
            f"{describe_duration(float(until) - time.time())}: --keep-ttl)"
            if isinstance(until, float)
            else ""
        )
        terminalreporter.write_line(
            f"kept up: `harness ls` lists it, `harness down {testnet_id}` removes it{lifetime}"
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
        artifacts = artifacts_dir(request.config, request.node.nodeid, _attempt(request.node))
        shutil.rmtree(artifacts, ignore_errors=True)
        try:
            testnet = testnet_factory(
                declared, timeout, failure_artifacts=artifacts, fixture=str(request.fixturename)
            )
        except BaseException as failure:  # a time limit or an interrupt leaves them too
            if artifacts.is_dir():
                request.config.stash[failed_starts_key][id(failure)] = artifacts
            raise
        try:
            yield testnet
        finally:
            testnet_factory.release(testnet)

    return _testnet


def _attempt(node: pytest.Item | pytest.Collector) -> int:
    """Which attempt of the test this is (pytest-rerunfailures counts them; 1 without it)."""
    return int(getattr(node, "execution_count", 1) or 1)


def _testnets(item: pytest.Item) -> list[Testnet]:
    funcargs = getattr(item, "funcargs", {})
    return [value for value in funcargs.values() if isinstance(value, Testnet)]


def thresholds_for(item: pytest.Item) -> MetricThresholds:
    """The default thresholds changed by the item's `metric_thresholds` markers."""
    thresholds = MetricThresholds.defaults()
    for marker in reversed(list(item.iter_markers("metric_thresholds"))):
        unknown = set(marker.kwargs) - {
            "update",
            "update_replica",
            "update_orchestrator",
            "remove",
            "remove_all",
        }
        if unknown or marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: metric_thresholds takes update=, update_replica=, "
                f"update_orchestrator=, remove=, remove_all=; got {sorted(unknown) or marker.args}"
            )
        if marker.kwargs.get("remove_all"):
            thresholds.remove_all()
        for name in marker.kwargs.get("remove", []):
            thresholds.remove(name)
        for name, maximum in marker.kwargs.get("update_replica", {}).items():
            thresholds.update_replica_metric(name, maximum)
        for name, maximum in marker.kwargs.get("update_orchestrator", {}).items():
            thresholds.update_orchestrator_metric(name, maximum)
        for program, limits in marker.kwargs.get("update", {}).items():
            for name, maximum in limits.items():
                try:
                    thresholds.update(program, name, maximum)
                except HarnessError as exc:
                    raise pytest.UsageError(f"{item.nodeid}: metric_thresholds: {exc}") from None
    return thresholds


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After the test body (its time limit stops there): heal every fault it left (pass or
    fail), collect the artifacts of every testnet it used while they are up and scan their
    logs, then, if it passed, the metric and log checks. A test that asked for a fault its
    backend cannot do here (`CapabilityMissing`) is skipped with the reason. A test stopped
    by Ctrl-C or SIGTERM still leaves its artifacts and report."""
    __tracebackhide__ = True  # a failed check's traceback starts at `_check`
    testnets = _testnets(item)
    try:
        result = yield
    except CapabilityMissing as missing:  # the backend cannot do what the test needs here
        item.config.stash[limits_key].disarm()
        for testnet in testnets:
            testnet.heal_all()
        raise pytest.skip.Exception(str(missing), _use_item_location=True) from None
    except BaseException as failure:
        item.config.stash[limits_key].disarm()
        for testnet in testnets:
            try:
                testnet.heal_all()
            except Exception as exc:  # the test's own failure stays the one reported
                failure.add_note(f"healing {testnet.testnet_id} afterwards failed too: {exc}")
        if testnets:
            _gather(item, testnets)
            if isinstance(failure, KeyboardInterrupt | pytest.exit.Exception):
                _interrupted(item, failure)
        raise
    item.config.stash[limits_key].disarm()
    for testnet in testnets:
        testnet.heal_all()
    if testnets:
        _gather(item, testnets)
        _check(item, testnets)
    return result


def _interrupted(item: pytest.Item, failure: BaseException) -> None:
    """pytest reports nothing of a test it was interrupted in: its report, its line in the
    index and a word on where its artifacts are come from here."""
    window = _window(item)
    duration = time.time() - window.start
    _finish(item, "interrupted", duration, repr(failure))
    index = item.config.pluginmanager.get_plugin("harness-session-index")
    if isinstance(index, SessionIndex):
        index.records[(item.nodeid, _attempt(item))] = TestRecord(
            item.nodeid, "interrupted", duration
        )
    where = window.directory.resolve() if window.directory else "none: it had no testnet"
    capture = item.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nharness: {item.nodeid} interrupted: its artifacts are in {where}", flush=True)


def _window(item: pytest.Item) -> Window:
    window = item.stash.get(window_key, None)
    if window is None:  # a test run without the setup hook (another plugin's protocol)
        window = item.stash[window_key] = Window(time.time(), {})
    return window


def _gather(item: pytest.Item, testnets: list[Testnet]) -> None:
    """Collect the artifacts of `testnets` into the test's directory while they are up, and
    scan their logs since the test started."""
    window = _window(item)
    window.directory = directory = artifacts_dir(item.config, item.nodeid, _attempt(item))
    window.end = time.time()
    shutil.rmtree(directory, ignore_errors=True)  # a rerun in another session replaces
    patterns = log_patterns_for(item)
    tail = _log_tail(item.config)
    for testnet in testnets:
        marks = window.marks.get(testnet.testnet_id, {})
        try:
            where = testnet.collect_artifacts(directory / testnet.testnet_id)
            samples, sampled_by = testnet.metric_samples(window.start, window.end)
            window.scans[testnet.testnet_id] = testnet.scan_logs(
                patterns, marks, dict(logs_in(where)), tail
            )
        except Exception as exc:  # artifacts must never hide the test's own outcome
            window.problems.append(f"collecting artifacts of {testnet.testnet_id} failed: {exc!r}")
        else:
            window.collected.append(Collected(testnet, where, samples, sampled_by))


def _check(item: pytest.Item, testnets: list[Testnet]) -> None:
    """The metric checks and the log checks of a test that passed: every failure is raised
    (the metric checks' first, with the log checks' as a note)."""
    thresholds = thresholds_for(item)
    failures: list[HarnessError] = []
    for testnet in testnets:
        try:
            testnet.check_metrics(thresholds)
        except MetricCheckFailed as exc:
            failures.append(exc)
    window = _window(item)
    for testnet in testnets:
        scanned = window.scans.get(testnet.testnet_id)
        if scanned is None:  # its artifacts could not be collected: read its logs now
            marks = window.marks.get(testnet.testnet_id, {})
            scanned = testnet.scan_logs(log_patterns_for(item), marks)
        if scanned.findings:
            failures.append(LogCheckFailed([str(finding) for finding in scanned.findings]))
    if failures:
        for other in failures[1:]:
            failures[0].add_note(str(other))
        raise failures[0]


def _finish(item: pytest.Item, outcome: str, duration: float, failure: str) -> None:
    """Write the test's summaries and its report, from what `_gather` collected."""
    window = _window(item)
    if window.directory is None or window.end is None:
        return
    summary = [f"test: {item.nodeid}", f"outcome: {outcome}", f"duration: {duration:.2f}s"]
    summary += window.problems
    if failure:
        summary += ["", failure]
    for collected in window.collected:
        (collected.artifacts / "summary.txt").write_text("\n".join(summary) + "\n")
        journal = collected.testnet.directory / EVENTS_FILE  # with the checks' verdicts now
        if journal.is_file():
            shutil.copyfile(journal, collected.artifacts / EVENTS_FILE)
    # The report's window runs to now: the checks' verdicts came after the collection.
    start, end, collected_list = window.start, time.time(), list(window.collected)
    page = report_page(item.nodeid, outcome, end - start, start, end, collected_list, failure)
    item.config.stash[reports_key].submit(window.directory, page)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Write the test's report from what was collected while its testnets were up, and add
    what happened to the failure text of a test that failed or errored with a testnet."""
    report = yield
    if report.when == "setup" and report.failed and call.excinfo is not None:
        failed_start = item.config.stash[failed_starts_key].get(id(call.excinfo.value))
        if failed_start is not None:
            _link_artifacts(item, report, failed_start)
            with _never_hiding(report):
                _explain_failed_start(item, report, failed_start)
        return report
    window = item.stash.get(window_key, None)
    if report.when == "call" and window is not None and window.directory is not None:
        failure = str(report.longrepr) if report.longrepr is not None else ""
        _finish(item, report.outcome, report.duration, failure)
        _link_artifacts(item, report, window.directory)
        if report.failed:
            with _never_hiding(report):
                _add_explanation(report, window.directory, _explanation(window))
    return report


@contextlib.contextmanager
def _never_hiding(report: pytest.TestReport) -> Iterator[None]:
    """An explanation that cannot be made says why in the report, and never hides the test's
    own outcome."""
    try:
        yield
    except Exception as exc:
        report.sections.append((SECTION, f"the explanation could not be made: {exc!r}"))


def _explanation(window: Window) -> str:
    """What happened during the test's window, from what `_gather` collected."""
    assert window.directory is not None
    evidence = [
        TestnetEvidence(
            c.testnet.testnet_id,
            c.testnet.backend.name,
            c.artifacts,
            c.testnet.journal.events(),
            window.scans.get(c.testnet.testnet_id, LogScan()),
        )
        for c in window.collected
    ]
    text = explain(
        window.start,
        time.time(),  # the checks' verdicts came after the window's end
        evidence,
        window.directory,
        window.directory / REPORT_FILE,
    )
    return "\n".join([text, *window.problems])


def _stuck(item: pytest.Item, message: str) -> None:
    """The watchdog's last word, in its thread (the main thread is stuck): the stacks of every
    thread, the test's artifacts, report and explanation, then its testnets torn down."""
    capture = item.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with contextlib.suppress(Exception):
            capture.suspend_global_capture(in_=False)
    print(f"\nharness: {message}", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    factory = item.config.stash.get(factory_key, None)
    live = list(factory.live) if factory is not None else []
    if live:
        _gather(item, live)
        window = _window(item)
        _finish(item, "timeout (stuck)", time.time() - window.start, message)
        item.config.stash[reports_key].close()  # the report is written before the exit
        print(f"{SECTION}:\n{_explanation(window)}", file=sys.stderr, flush=True)
    for testnet in live:
        with contextlib.suppress(Exception):
            testnet.close()
    if factory is not None:
        factory.run.close()


def _explain_failed_start(item: pytest.Item, report: pytest.TestReport, where: Path) -> None:
    """What happened to testnets whose start failed, from the artifacts their start left."""
    window = _window(item)
    evidence = []
    for testnet_dir in sorted(p for p in where.iterdir() if p.is_dir()):
        logs = dict(logs_in(testnet_dir))
        scanned = scan(logs, {}, log_patterns_for(item), _log_tail(item.config))
        evidence.append(
            TestnetEvidence(
                testnet_dir.name,
                _setting(item.config, "harness_backend", "local"),  # every testnet's
                testnet_dir,
                journal_events(testnet_dir / EVENTS_FILE),
                scanned,
            )
        )
    _add_explanation(report, where, explain(window.start, time.time(), evidence, where, None))


def _add_explanation(report: pytest.TestReport, directory: Path, text: str) -> None:
    """Into the failure text (so JUnit XML's failure or error element carries it, and pytest
    prints it after the traceback) where it can go, else as a section of the report; and into
    the artifacts."""
    addsection = getattr(report.longrepr, "addsection", None)  # an exception's longrepr
    if callable(addsection):
        addsection(SECTION, text)
    else:
        report.sections.append((SECTION, text))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXPLANATION_FILE).write_text(text + "\n", encoding="utf-8")


def _link_artifacts(item: pytest.Item, report: pytest.TestReport, directory: Path) -> None:
    """Name the artifact directory in the report and in the JUnit XML (a `harness_artifacts`
    property: junitxml writes the item's user properties with the teardown report)."""
    where = str(directory.resolve())
    report.sections.append(("harness artifacts", where))
    if (ARTIFACTS_PROPERTY, where) not in item.user_properties:
        item.user_properties.append((ARTIFACTS_PROPERTY, where))


def artifacts_dir(config: pytest.Config, nodeid: str, attempt: int = 1) -> Path:
    """The artifact directory of a test's attempt (or of a module, for a module-scoped
    testnet)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:180]
    if attempt > 1:
        name += f"-attempt-{attempt}"
    return config.stash[artifacts_key] / name
