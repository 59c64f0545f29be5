"""What happened during a failed test, as plain text for pytest's own output and JUnit XML: the
testnets' events in time order (seconds since the test started, node, program), what the log
checks found, the last lines of every log worth reading (a program that exited abnormally,
logged an error or matched a log check), and where the artifacts and the report are.

Built from a test's artifacts (what `Testnet.collect_artifacts` wrote, with the orchestrators'
journals) and the driver's journal, so it also explains a testnet whose start failed. Kept to a
readable size: what it leaves out, it counts, and says where the rest is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.driver.logcheck import LogKey, LogScan
from harness.driver.timeline import Event, orchestrator_events

MAX_EVENTS = 40
"""Events shown per testnet; past that, the warnings and errors are kept before the rest."""
MAX_TAILS = 6
"""Logs whose last lines are shown, per testnet."""
MAX_FINDINGS = 10
"""Forbidden lines shown, per testnet."""
MAX_LINE = 240
"""Characters of a line shown."""


@dataclass(frozen=True)
class TestnetEvidence:
    """What one testnet left of a test: its id and backend, its artifact directory, the
    driver's events (its journal) and what the scan of its logs found."""

    __test__ = False  # not a pytest test class, despite its name

    testnet_id: str
    backend: str
    artifacts: Path
    events: Sequence[Event]
    logs: LogScan


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def _chosen(events: list[Event], limit: int) -> tuple[list[Event], list[Event]]:
    """At most `limit` events, warnings and errors first, in time order; and those left out."""
    if len(events) <= limit:
        return events, []
    ranked = sorted(range(len(events)), key=lambda i: (events[i].level == "info", i))
    return [events[i] for i in sorted(ranked[:limit])], [events[i] for i in ranked[limit:]]


def _events_lines(events: list[Event], start: float) -> list[str]:
    width = max((len(e.node or "testnet") for e in events), default=7)
    program_width = max((len(e.program or "") for e in events), default=0)
    lines = []
    for event in events:
        mark = {"warning": "!", "error": "X"}.get(event.level, " ")
        lines.append(
            _cut(
                f"  {event.t - start:+8.3f}s {mark} {(event.node or 'testnet'):<{width}} "
                f"{(event.program or ''):<{program_width}} {event.text}"
            )
        )
    return lines


def _abnormal(events: Sequence[Event]) -> dict[LogKey, str]:
    """The programs that exited on their own or could not start, with what happened last."""
    found: dict[LogKey, str] = {}
    for event in events:
        if event.source != "orchestrator" or not event.node or not event.program:
            continue
        if (event.kind == "exit" and event.level != "info") or event.kind == "start_failed":
            found[(event.node, event.program)] = event.text
    return found


def _testnet_section(evidence: TestnetEvidence, start: float, end: float) -> list[str]:
    events = [e for e in evidence.events if start <= e.t <= end]
    events += [e for e in orchestrator_events(evidence.artifacts) if start <= e.t <= end]
    events.sort(key=lambda e: e.t)
    lines = [f"testnet {evidence.testnet_id} ({evidence.backend} backend): {len(events)} events"]
    shown, left_out = _chosen(events, MAX_EVENTS)
    lines += _events_lines(shown, start)
    if left_out:
        levels = Counter(e.level for e in left_out)
        counted = ", ".join(f"{n} {level}" for level, n in sorted(levels.items()))
        journal = (evidence.artifacts / "events.jsonl").resolve()
        lines.append(
            f"  ... {len(left_out)} more ({counted}) left out: every event is in report.html, "
            f"{journal} and nodes/*/events.jsonl"
        )
    scan = evidence.logs
    if scan.findings:
        lines.append(f"log checks: {len(scan.findings)} forbidden line(s)")
        lines += [f"  {_cut(str(finding))}" for finding in scan.findings[:MAX_FINDINGS]]
        if len(scan.findings) > MAX_FINDINGS:
            lines.append(f"  ... {len(scan.findings) - MAX_FINDINGS} more left out")
    reasons: dict[LogKey, list[str]] = {}
    for key, text in _abnormal(events).items():
        reasons.setdefault(key, []).append(text)
    for line in scan.errors:
        why = reasons.setdefault((line.node, line.program), [])
        if "logged an error" not in why:
            why.append("logged an error")
    for finding in scan.findings:
        why = reasons.setdefault((finding.line.node, finding.line.program), [])
        if "matched a log check" not in why:
            why.append("matched a log check")
    for (node, program), why in list(reasons.items())[:MAX_TAILS]:
        tail = scan.tails.get((node, program), [])
        where = (evidence.artifacts / "nodes" / node / f"{program}.log").resolve()
        lines.append(f"last {len(tail)} lines of {node} {program} ({'; '.join(why)}): {where}")
        lines += [f"  | {_cut(text)}" for text in tail]
    if len(reasons) > MAX_TAILS:
        more = ", ".join(f"{n} {p}" for n, p in list(reasons)[MAX_TAILS:])
        lines.append(f"logs of {len(reasons) - MAX_TAILS} more left out: {more}")
    return lines


def explain(
    start: float,
    end: float,
    testnets: Sequence[TestnetEvidence],
    artifacts: Path,
    report: Path | None,
) -> str:
    """The text of a failed test's section (see the module's docstring); `start` and `end`
    are the test's window (Unix times)."""
    lines = [f"test window: {end - start:.1f} s; times are seconds since the test started"]
    for evidence in testnets:
        lines += _testnet_section(evidence, start, end)
    lines.append(f"artifacts: {artifacts.resolve()}")
    if report is not None:
        lines.append(f"report: {report.resolve()}")
    return "\n".join(lines)
