"""Errors the driver raises, one tree so callers can catch as broadly as they need::

HarnessError
├── TopologyError            the declared topology is invalid (raised before anything starts)
├── BackendUnavailable       the chosen backend cannot run here (says why and what to use)
├── CapabilityMissing        the backend cannot do what a fault needs here (a test is skipped)
├── NodeStartError           a node's programs could not be started
├── NodeNotReady             a wait timed out (also a TimeoutError); says what it last saw
├── MetricsScrapeError       a metrics endpoint could not be read or parsed
└── MetricCheckFailed        metric thresholds exceeded; lists every offender
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
