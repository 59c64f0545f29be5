"""Ctrl-C and SIGTERM while a session has testnets: the first interrupts the test where it is
(SIGINT as KeyboardInterrupt, as pytest expects; SIGTERM, which would otherwise kill pytest with
no teardown at all, as `pytest.exit`), the test's artifacts are still collected, the testnets
are torn down, and the session exits 130 or 143, as `harness up` does. Later signals are
ignored, with a word on stderr, until the teardown is over: a second Ctrl-C must not leave
nodes running.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import pytest

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Installed while the session's testnet factory lives (`install` / `restore`)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED}

    def restore(self) -> None:
        """Give the signals back (the testnets are down); an interrupt seen stays seen."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True  # pytest names where the test was instead
        if self.received is not None:
            print(
                f"harness: {signal.Signals(signum).name} ignored: tearing the testnets down",
                file=sys.stderr,
                flush=True,
            )
            return
        self.received = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise pytest.exit.Exception(
            f"{signal.Signals(signum).name}: artifacts collected, testnets torn down",
            returncode=128 + signum,
        )

    def exit_status(self, status: int) -> int:
        """The session's exit status: 128 + the signal's number after an interrupt."""
        if self.received is not None and status in (
            pytest.ExitCode.INTERRUPTED,
            128 + self.received,
        ):
            return 128 + self.received
        return status
