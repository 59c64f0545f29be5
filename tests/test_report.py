"""The parts of a test's report without a testnet: the orchestrator journal read back, the
sampler's series and health transitions, and the HTML pages (report and index)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.driver.errors import MetricsScrapeError
from harness.driver.report import TestRecord, render_index, render_report, series_svg
from harness.driver.sampler import Sample, Sampler, Target, interval_for
from harness.driver.timeline import Event, Journal, orchestrator_events, parse_orchestrator_journal

ORCHESTRATOR_METRICS = """\
# TYPE orchestrator_processes_start_attempts_total counter
orchestrator_processes_start_attempts_total{process="replica"} 2
orchestrator_processes_start_attempts_total{process="ic-gateway"} 1
# TYPE orchestrator_process_restart_backoff_seconds gauge
orchestrator_process_restart_backoff_seconds{process="replica"} 0.5
orchestrator_process_restart_backoff_seconds{process="ic-gateway"} 0
"""


def test_the_orchestrator_journal_reads_back_as_events(tmp_path: Path) -> None:
    lines = [
        {"t": 10.0, "node": "n1", "program": "replica", "event": "start", "pid": 7},
        {
            "t": 11.0,
            "node": "n1",
            "program": "replica",
            "event": "exit",
            "status": "killed by signal 9 (SIGKILL)",
            "runtime": 1.0,
            "requested": False,
        },
        {
            "t": 11.0,
            "node": "n1",
            "program": "replica",
            "event": "backoff",
            "delay": 0.5,
            "reason": "exited on its own after 1.0 s",
        },
        {
            "t": 12.0,
            "node": "n1",
            "program": "replica",
            "event": "exit",
            "status": "exit code 0",
            "runtime": 1.0,
            "requested": True,
        },
        {"t": 13.0, "node": "n1", "program": "orchestrator", "event": "registry", "version": 3},
    ]
    node_dir = tmp_path / "nodes" / "n1"
    node_dir.mkdir(parents=True)
    text = "\n".join(json.dumps(line) for line in lines)
    # A line cut short by a kill, at the end, is left out.
    (node_dir / "events.jsonl").write_text(text + '\n{"t": 14.0, "node": "n1", "prog')
    events = orchestrator_events(tmp_path)
    assert [(e.t, e.kind, e.level, e.text) for e in events] == [
        (10.0, "start", "info", "replica started (pid 7)"),
        (
            11.0,
            "exit",
            "warning",
            "replica exited on its own (killed by signal 9 (SIGKILL)) after 1.0 s",
        ),
        (11.0, "backoff", "warning", "replica backs off 0.5 s: exited on its own after 1.0 s"),
        (12.0, "exit", "info", "replica stopped (exit code 0) after 1.0 s"),
        (13.0, "registry", "info", "orchestrator acted on registry version 3"),
    ]
    assert {(e.node, e.source) for e in events} == {("n1", "orchestrator")}
    assert parse_orchestrator_journal(["not json", "[1, 2]", "{}"]) == []


def test_the_journal_keeps_events_in_a_window_and_on_disk(tmp_path: Path) -> None:
    clock = iter([1.0, 2.0, 3.0]).__next__
    journal = Journal(tmp_path / "events.jsonl", clock=clock)
    journal.record("registry", "registry version 1: the initial topology")
    journal.record("fault", "pause of n1 injected", "n1", level="warning")
    journal.record("heal", "pause of n1 healed", "n1")
    assert [e.kind for e in journal.events(since=2.0, until=2.5)] == ["fault"]
    on_disk = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in on_disk] == ["registry", "fault", "heal"]
    assert on_disk[1] == {
        "t": 2.0,
        "kind": "fault",
        "text": "pause of n1 injected",
        "node": "n1",
        "program": None,
        "level": "warning",
        "source": "harness",
    }


def test_the_sampler_keeps_series_and_notes_health_transitions() -> None:
    answers: dict[str, str | None] = {"orchestrator": ORCHESTRATOR_METRICS, "replica": None}

    def scrape(program: str) -> str:
        text = answers[program]
        if text is None:
            raise MetricsScrapeError(f"{program}: connection refused")
        return text

    targets = [
        Target("n1", "orchestrator", lambda: scrape("orchestrator")),
        Target("n1", "replica", lambda: scrape("replica")),
    ]
    now = iter(float(t) for t in range(100)).__next__
    journal = Journal(clock=now)
    sampler = Sampler(lambda: targets, journal, clock=now)
    sampler.sample_once(targets)  # the replica is not up yet: no transition
    answers["replica"] = "# TYPE replica_http_requests counter\nreplica_http_requests_total 5\n"
    sampler.sample_once(targets)  # up: its first sight is no transition either
    answers["replica"] = None
    sampler.sample_once(targets)  # down: a transition
    answers["replica"] = "replica_http_requests_total 9\n"
    sampler.sample_once(targets)  # up again
    assert [(e.kind, e.level, e.text) for e in journal.events()] == [
        ("health", "warning", "replica metrics not answering: replica: connection refused"),
        ("health", "info", "replica metrics answering again"),
    ]
    series = {(s.t, s.series): s.value for s in sampler.samples()}
    assert [series[(t, "up")] for t in (0.0, 1.0, 2.0, 4.0)] == [1, 2, 1, 2]
    assert series[(0.0, "program_starts")] == 3
    assert series[(0.0, "restart_backoff")] == 0.5
    assert series[(1.0, "replica_requests")] == 5
    assert series[(4.0, "replica_requests")] == 9
    assert interval_for(3) == 0.5
    assert interval_for(500) == 10.0


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, flags=re.S)


def test_a_report_shows_the_window_s_events_and_plots_the_series() -> None:
    events = [
        Event(99.0, "fault", "before the test"),
        Event(101.0, "fault", "SIGKILL to the replica of n1 injected", "n1", level="warning"),
        Event(
            101.1, "exit", "replica exited on its own", "n1", "replica", "warning", "orchestrator"
        ),
        Event(102.0, "check", "metric checks failed: 1 offender(s)", level="error"),
    ]
    samples = [Sample(100.0 + i, "n1", "gateway_requests", 10.0 * i) for i in range(5)]
    samples += [Sample(100.0 + i, "n1", "up", 3) for i in range(5)]
    page = render_report(
        "systests/test_x.py::test_y[<a>]",
        "failed",
        4.0,
        100.0,
        104.0,
        events,
        samples,
        failure="AssertionError: <boom>",
        links=[("ic-0: summary", "ic-0/summary.txt")],
    )
    assert "before the test" not in page
    assert page.count("<tr class=") == 3
    assert "SIGKILL to the replica of n1 injected" in page
    assert "+1.100 s" in page
    assert "AssertionError: &lt;boom&gt;" in page  # escaped, like the test id
    assert "test_y[&lt;a&gt;]" in page
    assert "href='ic-0/summary.txt'" in page
    svgs = _svgs(page)
    assert len(svgs) == 3  # the timeline, then gateway requests and up
    assert "data-series='gateway_requests'" in page and "data-series='up'" in page
    assert all("<path" in svg for svg in svgs)
    # Self-contained: nothing to run, nothing fetched.
    assert "<script" not in page and "<link" not in page and "<metadata>" not in page
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", page)


def test_a_lone_sample_is_plotted_as_a_marker() -> None:
    """A node sampled once in the window (a short test) is a line of no length, which no
    renderer draws: it gets a marker; a node sampled more often stays a bare line."""
    samples = [Sample(100.0, "n1", "up", 3), Sample(100.0, "n2", "up", 3)]
    samples.append(Sample(101.0, "n2", "up", 3))
    svg = series_svg(samples, "up", "up", "endpoints", False, 100.0)
    assert svg is not None
    lines = re.findall(r'<g id="line2d_\d+">.*?</g>\n', svg, flags=re.S)
    data = [line for line in lines if "clip-path" in line and "#b0b0b0" not in line]
    lone, sampled = data
    assert "<use" in lone and re.search(r'd="M [\d.]+ [\d.]+ \n"', lone)
    assert "<use" not in sampled


def test_a_report_without_events_or_samples_says_so() -> None:
    page = render_report("t::x", "passed", 1.0, 0.0, 1.0, [], [])
    assert "0 events" in page
    assert "No metrics were sampled during the test." in page
    assert _svgs(page) == []


def test_the_index_lists_every_test_with_its_report(tmp_path: Path) -> None:
    report = tmp_path / "t_x" / "report.html"
    records = [
        TestRecord("t::x", "passed", 1.5, report),
        TestRecord("t::y", "failed", 2.25),
    ]
    page = render_index(records, tmp_path)
    assert "1 failed, 1 passed" in page
    assert "href='t_x/report.html'" in page
    assert "2.25 s" in page and "no report" in page


@pytest.mark.parametrize("outcome", ["passed", "failed", "error", "skipped"])
def test_every_outcome_is_shown(outcome: str) -> None:
    assert f">{outcome}</span>" in render_report("t::x", outcome, 1.0, 0.0, 1.0, [], [])
