"""Errors the driver raises, one tree so callers can catch as broadly as they need::

HarnessError
├── TopologyError            the declared topology is invalid (raised before anything starts)
├── BackendUnavailable       the chosen backend cannot run here (says why and what to use)
├── CapabilityMissing        the backend cannot do what a fault needs here (a test is skipped)
├── NodeStartError           a node's programs could not be started
├── NodeNotReady             a wait timed out (also a TimeoutError); says what it last saw
├── MetricsScrapeError       a metrics endpoint could not be read or parsed
├── MetricCheckFailed        metric thresholds exceeded; lists every offender
└── LogCheckFailed           a node program logged a forbidden line; lists every one
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the driver raises."""


class TopologyError(HarnessError, ValueError):
    """The declared topology is invalid."""


class BackendUnavailable(HarnessError):
    """The backend cannot run on this machine."""


class CapabilityMissing(HarnessError):
    """The backend lacks what a fault needs, or cannot use it here (the message says which and
    why); the pytest plugin skips the test that asked for it."""


class NodeStartError(HarnessError):
    """A node could not be started."""


class NodeNotReady(HarnessError, TimeoutError):
    """A wait for a node condition timed out."""


class MetricsScrapeError(HarnessError):
    """A metrics endpoint could not be scraped or parsed."""


class MetricCheckFailed(HarnessError, AssertionError):
    """One or more metrics exceeded their maximum; the message lists every offender."""

    def __init__(self, offenders: list[str]) -> None:
        self.offenders = offenders
        super().__init__("\n".join(offenders))


class LogCheckFailed(HarnessError, AssertionError):
    """Node programs logged lines a log check forbids (`harness.driver.logcheck`); the message
    names the node, the program, the line number and the line of every one."""

    def __init__(self, findings: list[str]) -> None:
        self.findings = findings
        super().__init__(
            f"log checks failed: {len(findings)} forbidden line(s)\n" + "\n".join(findings)
        )
