"""The reports in a real browser: an inner session (pytester, the local backend) runs a test that
passes after its replica is killed and one that fails after a registry change; Debian's
chromium, headless, driven by selenium through chromium-driver, then loads each test's
`report.html` and the session's `index.html` from disk and checks what a reader sees: the
outcome (and the failure), the events that test caused in the table and as markers in the
timeline, the plots drawn with a line each, the index's rows and links, and no console error.
A session run with --prometheus gets reports whose plots say they are what Prometheus scraped.

chromium and chromedriver come with Debian's chromium and chromium-driver packages, which
`scripts/install-test-tools` installs (as root; `.ci/run` runs it). Without them these tests skip
saying so (`pytest -rs` lists why).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium or chromedriver is not installed: run scripts/install-test-tools as root "
    "(it installs Debian's chromium and chromium-driver packages, as .ci/run does)",
)

# The inner sessions load pytest-asyncio (installed beside the harness) with an ini of their own.
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

PASSED = "test_reports.py::test_a_killed_replica_comes_back"
FAILED = "test_reports.py::test_a_failure_after_an_upgrade"

# Two tests on one cloud-engine node (a module-scoped testnet: started once, in the first test's
# window); each waits for a few sampling rounds, so that its report's plots have lines.
INNER_TESTS = """
import time

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1)),
    scope="module",
)


def await_sampling_rounds(testnet, since, rounds=3):
    deadline = time.monotonic() + 20
    while len({sample.t for sample in testnet.sampler.samples(since)}) < rounds:
        assert time.monotonic() < deadline, "the sampler did not sample"
        time.sleep(0.1)


@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_a_killed_replica_comes_back(testnet: Testnet) -> None:
    since = time.time()
    (node,) = testnet.nodes()
    killed = node.kill_process("replica")
    pid = node.await_process("replica", running=True)
    while pid == killed:
        pid = node.await_process("replica", running=True)
    assert node.await_status_is_healthy().is_healthy
    await_sampling_rounds(testnet, since)


def test_a_failure_after_an_upgrade(testnet: Testnet) -> None:
    since = time.time()
    (subnet,) = testnet.topology_snapshot().subnets
    testnet.registry.set_replica_version(subnet.subnet_id, "2.0.0")
    (node,) = subnet.nodes
    assert node.await_status_is_healthy(version="2.0.0").is_healthy
    await_sampling_rounds(testnet, since)
    assert node.status().impl_version == "3.0.0", "this test fails on purpose"
"""

# Each plot's data, a line per node: a line2d group in the axes themselves (grid lines and ticks
# are in the axis groups, the legend's sample line in the legend's), its path and, for a node
# sampled once, a marker.
PLOT_LINES = "g[id^='axes_'] > g[id^='line2d_']"
# The timeline's markers: one per event, in the scatter collections of the axes.
TIMELINE_MARKERS = "g[id^='axes_'] > g[id^='PathCollection_'] use"
# The axes' background: where the markers and lines are drawn (and clipped).
AXES_AREA = "g[id^='axes_'] > g[id^='patch_']"
# The width and height an SVG element's geometry takes, in its own coordinates.
BBOX = "const box = arguments[0].getBBox(); return [box.width, box.height];"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless chromium for the module, keeping every console message."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # chromium refuses to run as root without it
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1024",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named, so that Selenium Manager looks for (and downloads) nothing.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def load(browser: webdriver.Chrome, page: Path) -> None:
    """Open `page` from disk; what the console said before is dropped."""
    browser.get_log("browser")
    browser.get(page.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


def assert_no_console_errors(browser: webdriver.Chrome) -> None:
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], f"{browser.current_url}: console errors {severe}"


def assert_rendered(element: WebElement, what: str) -> None:
    assert element.is_displayed(), f"{what} is not displayed"
    assert element.size["width"] > 0 and element.size["height"] > 0, f"{what}: {element.size}"


@dataclass(frozen=True)
class Row:
    """A row of a report's events table, as the reader sees it."""

    t: float  # seconds since the test started
    node: str
    program: str
    kind: str
    text: str


def events(browser: webdriver.Chrome) -> list[Row]:
    rows = []
    for row in browser.find_elements(By.CSS_SELECTOR, "table#events tr.event"):
        assert row.is_displayed()
        when, node, program, kind, text = (c.text for c in row.find_elements(By.TAG_NAME, "td"))
        assert kind == row.get_attribute("data-kind")
        assert when.endswith(" s"), when
        rows.append(Row(float(when.removesuffix(" s")), node, program, kind, text))
    return rows


def check_report(browser: webdriver.Chrome, page: Path, nodeid: str, outcome: str) -> list[Row]:
    """Load a test's report and check what every report shows: its test id and outcome, events,
    the timeline (a marker per event inside its axes, their kinds in its legend, a lane per
    node), plots each with a visible line per node (of the `up` and `program_starts` series at
    least, lines over time) and no console error; return the events table's rows."""
    load(browser, page)
    assert browser.find_element(By.TAG_NAME, "h1").text == nodeid
    shown = browser.find_element(By.CSS_SELECTOR, "span.outcome")
    assert_rendered(shown, "the outcome")
    assert shown.text == outcome
    rows = events(browser)
    assert rows, "no events in the report"

    timeline = browser.find_element(By.CSS_SELECTOR, "figure.timeline svg")
    assert_rendered(timeline, "the timeline")
    markers = timeline.find_elements(By.CSS_SELECTOR, TIMELINE_MARKERS)
    assert len(markers) == len(rows), "a marker per event in the timeline"
    area = timeline.find_element(By.CSS_SELECTOR, AXES_AREA).rect
    for marker in markers:  # a line ("|", a stop) has no width: its stroke is what shows
        box = marker.rect
        assert box["width"] + box["height"] > 0, f"a timeline marker of no size: {box}"
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        inside = area["x"] - 1 <= x <= area["x"] + area["width"] + 1
        assert inside and area["y"] - 1 <= y <= area["y"] + area["height"] + 1, (
            f"a timeline marker {box} outside the axes {area}"
        )
    legend = {t.text for t in timeline.find_elements(By.CSS_SELECTOR, "g[id^='legend_'] text")}
    assert legend == {row.kind for row in rows}
    lanes = {t.text for t in timeline.find_elements(By.CSS_SELECTOR, "g[id^='ytick_'] text")}
    assert lanes == {"testnet"} | {row.node for row in rows}

    plots = browser.find_elements(By.CSS_SELECTOR, "figure.plot svg")
    assert plots, "no plots in the report"
    over_time = set()
    for plot in plots:
        series = plot.find_element(By.XPATH, "..").get_attribute("data-series")
        assert_rendered(plot, f"the plot of {series}")
        lines = plot.find_elements(By.CSS_SELECTOR, PLOT_LINES)
        assert lines, f"no line in the plot of {series}"
        for line in lines:
            width, _ = browser.execute_script(BBOX, line.find_element(By.TAG_NAME, "path"))
            if width > 0:
                over_time.add(series)
            else:  # a single sample: a line of no length shows only as its marker
                markers = line.find_elements(By.TAG_NAME, "use")
                assert markers, f"the plot of {series}: a line of no length and no marker"
                assert markers[0].rect["width"] > 0, f"the plot of {series}: an invisible marker"
    # Sampled every round while the test ran: lines over its time.
    assert {"up", "program_starts"} <= over_time, f"lines over time in {over_time} only"
    assert_no_console_errors(browser)
    return rows


def inner_session(
    pytester: pytest.Pytester, name: str, source: str, *options: str, **outcomes: int
) -> Path:
    """Run the tests of `source` (module `name`) in an inner session (the local backend) with
    `options`, check its `outcomes`; return its artifacts directory."""
    pytester.makeini(INI)
    pytester.makepyfile(**{name: source})
    artifacts = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(
        *options, "--artifacts-dir", str(artifacts), "-p", "no:cacheprovider"
    )
    result.assert_outcomes(**outcomes)
    return artifacts


def sampled_by(browser: webdriver.Chrome) -> str:
    shown = browser.find_element(By.ID, "sampled-by")
    assert_rendered(shown, "what sampled the metrics")
    text: str = shown.text
    return text


# One test on a testnet with a Prometheus beside it (the inner session runs with --prometheus),
# waiting until Prometheus has a few points of the test's window.
INNER_PROMETHEUS_TEST = """
import time

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1))
)


@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_scraped_by_prometheus(testnet: Testnet) -> None:
    since = time.time()
    (node,) = testnet.nodes()
    node.kill_process("replica")
    assert node.await_status_is_healthy().is_healthy
    deadline = time.monotonic() + 30
    while True:
        samples, sampled_by = testnet.metric_samples(since, time.time())
        assert sampled_by.startswith("Prometheus"), sampled_by
        if len({s.t for s in samples if s.series == "program_starts"}) >= 3:
            break
        assert time.monotonic() < deadline, "Prometheus did not scrape"
        time.sleep(0.2)
"""


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="needs prometheus (Debian package prometheus; as root: scripts/install-test-tools)",
)
def test_a_report_with_prometheus_plots_what_it_scraped(
    pytester: pytest.Pytester, browser: webdriver.Chrome
) -> None:
    artifacts = inner_session(
        pytester, "test_scraped", INNER_PROMETHEUS_TEST, "--prometheus", passed=1
    )
    nodeid = "test_scraped.py::test_scraped_by_prometheus"
    rows = check_report(
        browser, artifacts / nodeid.replace("::", "_") / "report.html", nodeid, "passed"
    )
    assert any(row.kind == "fault" for row in rows), rows  # the test's kill
    assert sampled_by(browser).startswith("Sampled by Prometheus (http://127.")
    # The report links the testnet's Prometheus artifacts, its config among them.
    (link,) = [
        a
        for a in browser.find_elements(By.CSS_SELECTOR, "a")
        if (a.get_attribute("href") or "").endswith("/prometheus/")
    ]
    assert "TSDB snapshot" in link.text
    href = link.get_attribute("href")
    assert href is not None
    assert Path(url2pathname(urlparse(href).path), "prometheus.yml").is_file(), href


def test_reports_and_index_in_chromium(
    pytester: pytest.Pytester, browser: webdriver.Chrome
) -> None:
    artifacts = inner_session(pytester, "test_reports", INNER_TESTS, passed=1, failed=1)
    # Each test's directory is named after its id (`artifacts_dir`: "::" becomes "_").
    report = {
        nodeid: artifacts / nodeid.replace("::", "_") / "report.html" for nodeid in (PASSED, FAILED)
    }

    # The passed test: the kill, the replica's exit it caused, then its start again.
    rows = check_report(browser, report[PASSED], PASSED, "passed")
    (fault,) = [row for row in rows if row.kind == "fault"]
    assert fault.text == f"SIGKILL to the replica of {fault.node} injected"
    (died,) = [row for row in rows if row.kind == "exit" and row.program == "replica"]
    assert died.node == fault.node and died.t >= fault.t
    assert "exited on its own (killed by signal 9" in died.text
    assert any(row.kind == "backoff" and row.program == "replica" for row in rows)
    starts = [row.t for row in rows if row.kind == "start" and row.program == "replica"]
    assert any(t >= died.t for t in starts), "no start of the replica after its exit"
    assert not any(row.kind == "registry" and "2.0.0" in row.text for row in rows)
    assert not browser.find_elements(By.TAG_NAME, "pre"), "a failure shown for a passed test"

    # The failed test: the registry change it made and its failure; not the other test's kill.
    rows = check_report(browser, report[FAILED], FAILED, "failed")
    assert any(
        row.kind == "registry" and row.text.endswith("replica version 2.0.0") for row in rows
    ), rows
    assert not any(row.kind == "fault" for row in rows)
    failure = browser.find_element(By.TAG_NAME, "pre")
    assert_rendered(failure, "the failure")
    assert "AssertionError: this test fails on purpose" in failure.text
    assert sampled_by(browser) == "Sampled by the harness's sampler"

    # The index: both tests, their outcomes, and links that open their reports.
    index = artifacts / "index.html"
    load(browser, index)
    tests = browser.find_elements(By.CSS_SELECTOR, "table#tests tr.test")
    listed = {}
    for row in tests:
        nodeid, outcome, _, _ = (c.text for c in row.find_elements(By.TAG_NAME, "td"))
        listed[nodeid] = outcome
    assert listed == {PASSED: "passed", FAILED: "failed"}
    assert_no_console_errors(browser)
    for nodeid in (PASSED, FAILED):
        load(browser, index)
        row = next(
            r
            for r in browser.find_elements(By.CSS_SELECTOR, "table#tests tr.test")
            if r.find_element(By.TAG_NAME, "td").text == nodeid
        )
        row.find_element(By.LINK_TEXT, "report").click()
        assert browser.current_url == report[nodeid].resolve().as_uri()
        assert browser.find_element(By.TAG_NAME, "h1").text == nodeid
        assert_no_console_errors(browser)
