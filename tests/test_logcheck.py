"""The log checks (`harness.driver.logcheck`) and a failed test's explanation
(`harness.driver.explain`) on logs and events made up here: the test's window in a log, the
defaults, allowed lines, bad patterns, and an explanation kept to a readable size that says
what it left out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.driver import HarnessError
from harness.driver.explain import MAX_EVENTS, TestnetEvidence, explain
from harness.driver.logcheck import LogPatterns, last_lines, scan, window
from harness.driver.timeline import Event

BEFORE = b"2026-12-07 10:00:00,000 replica INFO x: Traceback (most recent call last): old\n"
DURING = (
    b"2026-12-07 10:00:01,000 replica INFO x: fine\n"
    b"Traceback (most recent call last):\n"
    b'  File "x.py", line 1, in <module>\n'
    b"ValueError: boom\n"
    b"2026-12-07 10:00:02,000 replica ERROR x: could not\n"
    b"2026-12-07 10:00:03,000 replica CRITICAL x: this is the end\n"
    b"thread 'main' panicked at src/main.rs:1:1\n"
    b"This is a bug!\n"
)


def test_only_the_lines_written_since_the_mark_are_checked_with_their_numbers() -> None:
    result = scan(
        {("n0", "replica"): BEFORE + DURING}, {("n0", "replica"): len(BEFORE)}, LogPatterns(), 3
    )
    found = [(f.line.number, f.pattern) for f in result.findings]
    assert found == [
        (3, r"Traceback \(most recent call last\)"),
        (7, r"\bCRITICAL\b"),
        (8, "panicked"),
        (9, "This is a bug"),
    ]
    assert [line.number for line in result.errors] == [6, 7]
    assert result.tails[("n0", "replica")] == [
        "2026-12-07 10:00:03,000 replica CRITICAL x: this is the end",
        "thread 'main' panicked at src/main.rs:1:1",
        "This is a bug!",
    ]
    finding = result.findings[0]
    assert str(finding) == (
        "n0 replica line 3: Traceback (most recent call last): "
        "(forbidden: 'Traceback \\\\(most recent call last\\\\)')"
    )


def test_a_log_that_shrank_or_is_new_is_read_from_its_start() -> None:
    assert window(b"a\nb\n", 100) == (1, ["a", "b"])
    assert window(b"a\nb\n", 0) == (1, ["a", "b"])
    # A mark inside a line being written takes the whole line.
    assert window(b"a\nbc\nd\n", 3) == (2, ["bc", "d"])
    assert last_lines(b"a\nb\nc\n", 2) == ["b", "c"]
    assert last_lines(b"a\nb\nc", 2) == ["b", "c"]  # a last line still being written
    assert last_lines(b"a\nb\n", 5) == ["a", "b"]
    assert last_lines(b"", 3) == []
    result = scan({("n0", "ic-gateway"): DURING}, {}, LogPatterns(), 0)
    assert len(result.findings) == 4
    assert result.tails == {}


def test_allowed_patterns_let_a_forbidden_line_through_and_defaults_can_go() -> None:
    logs = {("n0", "replica"): DURING}
    allowed = LogPatterns.build(allow=["panicked at src/main.rs", "This is a bug"])
    assert [f.pattern for f in scan(logs, {}, allowed, 0).findings] == [
        r"Traceback \(most recent call last\)",
        r"\bCRITICAL\b",
    ]
    own = LogPatterns.build(forbid=["could not"], defaults=False)
    assert [f.line.number for f in scan(logs, {}, own, 0).findings] == [5]
    assert LogPatterns().extended(forbid=["fine"]).forbidding("x fine") is not None


@pytest.mark.parametrize(
    ("forbid", "allow", "message"),
    [
        (["("], [], "forbidden log pattern '(' is not a valid regex"),
        ([], ["[a"], "allowed log pattern '[a' is not a valid regex"),
        ([3], [], "forbidden log pattern 3 is not a string"),
    ],
)
def test_a_bad_pattern_is_a_clear_error(forbid: list[str], allow: list[str], message: str) -> None:
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace("[", r"\[")):
        LogPatterns.build(forbid, allow)


def _artifacts(tmp_path: Path, orchestrator_lines: list[dict[str, object]]) -> Path:
    node = tmp_path / "ic-0" / "nodes" / "n0"
    node.mkdir(parents=True)
    (node / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in orchestrator_lines))
    (node / "replica.log").write_bytes(DURING)
    return tmp_path / "ic-0"


def test_the_explanation_orders_events_shows_tails_and_says_what_it_left_out(
    tmp_path: Path,
) -> None:
    start = 1000.0
    crash = {"t": start + 2, "event": "exit", "node": "n0", "program": "replica",
             "status": "exit code 3", "runtime": 0.1}  # fmt: skip
    artifacts = _artifacts(tmp_path, [crash])
    driver = [Event(start + 0.5 + i * 0.01, "registry", f"registry version {i}") for i in range(60)]
    driver.append(Event(start - 5, "registry", "before the test"))
    driver.append(Event(start + 1, "fault", "SIGKILL to the replica of n0 injected", "n0",
                        level="warning"))  # fmt: skip
    logs = scan({("n0", "replica"): DURING}, {}, LogPatterns(), 20)
    text = explain(
        start, start + 10, [TestnetEvidence("ic-0", "local", artifacts, driver, logs)],
        tmp_path, tmp_path / "report.html",
    )  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "test window: 10.0 s; times are seconds since the test started"
    assert lines[1] == "testnet ic-0 (local backend): 62 events"
    assert "before the test" not in text
    # The warnings come first when there are too many: both kept, in time order.
    events = [line for line in lines if re.match(r" +[+-]\d+\.\d{3}s ", line)]
    assert len(events) == MAX_EVENTS
    assert any(
        "! n0" in line and "SIGKILL to the replica of n0 injected" in line for line in events
    )
    assert any("replica exited on its own (exit code 3) after 0.1 s" in line for line in events)
    times = [float(line.split()[0].rstrip("s")) for line in events]
    assert times == sorted(times)
    assert f"  ... {62 - MAX_EVENTS} more ({62 - MAX_EVENTS} info) left out" in text
    assert "log checks: 4 forbidden line(s)" in text
    header = next(line for line in lines if line.startswith("last "))
    assert header.startswith(
        "last 8 lines of n0 replica (replica exited on its own (exit code 3) after 0.1 s; "
        "logged an error; matched a log check): "
    )
    assert "  | ValueError: boom" in lines
    assert lines[-2] == f"artifacts: {tmp_path.resolve()}"
    assert lines[-1] == f"report: {(tmp_path / 'report.html').resolve()}"


def test_long_lines_are_cut(tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path, [])
    long = Event(1.0, "registry", "x" * 1000)
    text = explain(
        0.0,
        2.0,
        [TestnetEvidence("ic-0", "local", artifacts, [long], scan({}, {}, LogPatterns(), 0))],
        tmp_path,
        None,
    )
    assert max(len(line) for line in text.splitlines()) <= 240
    assert "…" in text and "report:" not in text
