"""Errors of the orchestrator; the checks log them and carry on.

OrchestratorError
├── ProcessBuildError     the registry/config does not give what a process needs
├── ProcessStartError     "Error when attempting to start <NAME> process: ..."
└── ProcessStopError      "Error when attempting to stop the <NAME> process: ..."
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """An expected failure of a check: logged, counted, retried on a later pass."""


class ProcessBuildError(OrchestratorError):
    """A process cannot be built from the static config and the registry's arguments."""


class ProcessStartError(OrchestratorError):
    """Spawning a process failed (binary missing, not executable, ...)."""


class ProcessStopError(OrchestratorError):
    """Signalling a process to stop failed."""
