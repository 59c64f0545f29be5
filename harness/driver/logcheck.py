"""Log checks after a test, the other half of the IC's after-test checks (its "unallowed log
patterns"): every node program's log lines written during the test, matched against forbidden
patterns, a line that also matches an allowed pattern being let through.

A test's window in a log starts at a byte offset (`LogMarks`, taken by `Testnet.log_marks()`
when the test starts; a log the marks do not know, or one that shrank since, is read from its
start). The same scan also finds the lines logged at ERROR or CRITICAL, which a failing test's
explanation (`harness.driver.explain`) shows with the log's last lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.driver.errors import HarnessError

DEFAULT_FORBIDDEN: tuple[str, ...] = (
    r"Traceback \(most recent call last\)",  # a Python traceback
    r"This is a bug",  # the IC's own marker of an impossible state
    r"panicked",  # a Rust panic
    r"\bCRITICAL\b",  # a CRITICAL record
)
"""What a node program's log may not say during a test, unless a test or session allows it."""

ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b")
"""A line logged at ERROR or CRITICAL (the node programs' format: `<time> <program> <LEVEL>`)."""

LogKey = tuple[str, str]
"""(node id, program): one log of a testnet."""
LogMarks = dict[LogKey, int]
"""Where each log stood when a test started: its size in bytes."""


def _compile(patterns: Iterable[str], what: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise HarnessError(f"{what} log pattern {pattern!r} is not a string (a regex)")
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise HarnessError(
                f"{what} log pattern {pattern!r} is not a valid regex: {exc}"
            ) from None
    return tuple(compiled)


@dataclass(frozen=True)
class LogPatterns:
    """The forbidden patterns and the allowed ones (regexes, searched in each line)."""

    forbid: tuple[re.Pattern[str], ...] = field(
        default_factory=lambda: _compile(DEFAULT_FORBIDDEN, "forbidden")
    )
    allow: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(
        cls, forbid: Iterable[str] = (), allow: Iterable[str] = (), defaults: bool = True
    ) -> LogPatterns:
        """The defaults (unless `defaults` is false) and `forbid` forbidden, `allow` allowed;
        `HarnessError` names a pattern that is not a valid regex."""
        base = DEFAULT_FORBIDDEN if defaults else ()
        return cls(_compile([*base, *forbid], "forbidden"), _compile(allow, "allowed"))

    def extended(self, forbid: Iterable[str] = (), allow: Iterable[str] = ()) -> LogPatterns:
        """These patterns and more."""
        return LogPatterns(
            self.forbid + _compile(forbid, "forbidden"), self.allow + _compile(allow, "allowed")
        )

    def forbidding(self, line: str) -> re.Pattern[str] | None:
        """The pattern that forbids `line`, or None when none does or an allowed one matches."""
        for pattern in self.forbid:
            if pattern.search(line):
                if any(allowed.search(line) for allowed in self.allow):
                    return None
                return pattern
        return None


@dataclass(frozen=True)
class LogLine:
    """A line of a node program's log; `number` counts from the log's first line."""

    node: str
    program: str
    number: int
    text: str

    def __str__(self) -> str:
        return f"{self.node} {self.program} line {self.number}: {self.text}"


@dataclass(frozen=True)
class LogFinding:
    """A line a forbidden pattern matched."""

    line: LogLine
    pattern: str

    def __str__(self) -> str:
        return f"{self.line} (forbidden: {self.pattern!r})"


@dataclass
class LogScan:
    """What the test's lines of every log held: the forbidden lines and those logged at ERROR
    or CRITICAL, and every log's last lines (for the explanation)."""

    findings: list[LogFinding] = field(default_factory=list)
    errors: list[LogLine] = field(default_factory=list)
    tails: dict[LogKey, list[str]] = field(default_factory=dict)


def window(content: bytes, offset: int) -> tuple[int, list[str]]:
    """The number of the first line written since `offset`, and those lines. An offset past
    the end (the log was truncated or replaced since) means the whole log."""
    if offset > len(content):
        offset = 0
    # A mark can fall inside a line that was being written: it belongs to the window.
    start = content.rfind(b"\n", 0, offset) + 1
    first = content.count(b"\n", 0, start) + 1
    return first, content[start:].decode("utf-8", errors="replace").splitlines()


def scan(
    logs: Mapping[LogKey, bytes], marks: Mapping[LogKey, int], patterns: LogPatterns, tail: int
) -> LogScan:
    """Check each log's lines since its mark against `patterns`; keep its last `tail` lines."""
    result = LogScan()
    for key, content in sorted(logs.items()):
        node, program = key
        first, lines = window(content, marks.get(key, 0))
        for number, text in enumerate(lines, first):
            pattern = patterns.forbidding(text)
            if pattern is not None:
                result.findings.append(
                    LogFinding(LogLine(node, program, number, text), pattern.pattern)
                )
            if ERROR_LINE.search(text):
                result.errors.append(LogLine(node, program, number, text))
        if tail > 0:
            result.tails[key] = last_lines(content, tail)
    return result


def last_lines(content: bytes, count: int) -> list[str]:
    """The last `count` lines of a log, decoding only them (a log can be long)."""
    start = len(content)
    for _ in range(count + 1):  # one more: the log's own last newline
        start = content.rfind(b"\n", 0, start)
        if start < 0:
            break
    return content[start + 1 :].decode("utf-8", errors="replace").splitlines()[-count:]


def logs_in(testnet_artifacts: Path) -> Iterator[tuple[LogKey, bytes]]:
    """Every node program's log in a testnet's artifacts (`nodes/<node>/<program>.log`, as
    `Testnet.collect_artifacts` writes them)."""
    for path in sorted(testnet_artifacts.glob("nodes/*/*.log")):
        yield (path.parent.name, path.stem), path.read_bytes()
