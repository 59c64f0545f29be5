"""Time limits of the tests that use a testnet: over its limit, a test fails saying TIMEOUT and
how long it ran, with its testnets still up, so that its artifacts, report and explanation are
collected before they are torn down.

The limits are pytest-timeout's settings (`--timeout`, the `timeout` ini key, the
`@pytest.mark.timeout(N)` marker, `--session-timeout`); a test with a testnet and none of them
gets `DEFAULT_LIMIT`. pytest-timeout's own timers stand aside for these tests (its `thread`
method would kill the process with no teardown, its `signal` method stops only at the end of the
whole protocol): the limit covers the setup (a testnet's start) and the test body, and a
SIGALRM raises `TimeLimitExceeded` in the main thread. A session limit cuts the last test's
limit short instead of waiting for it to end.

A test that does not stop then (stuck where no signal handler runs: in C code, or with SIGALRM
blocked) is ended `harness_timeout_grace` seconds later by a watchdog thread: its artifacts and
report are collected, its testnets torn down, every thread's stack printed, and the session
exits with status 1 (`EXIT_STUCK`); JUnit XML is not written then.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pytest
import pytest_timeout

DEFAULT_LIMIT = 600.0
"""A test's limit when nothing sets one: the IC's driver gives each test 10 minutes."""
DEFAULT_GRACE = 30.0
"""How long a test over its limit has to stop before the watchdog ends the session."""
EXIT_STUCK = 1


class TimeLimitExceeded(pytest.fail.Exception):  # type: ignore[name-defined, misc]
    """A test ran over its time limit (a failure, raised where the test was)."""


@dataclass
class _Armed:
    nodeid: str
    limit: float
    source: str
    started: float


def uses_testnet(item: pytest.Item) -> bool:
    """Whether the test (or one of its fixtures) uses the harness's testnets."""
    return "testnet_factory" in getattr(item, "fixturenames", ())


class TimeLimits:
    """Arms one SIGALRM timer, and its watchdog, at a time, for the test being run in the main
    thread. `on_stuck(item, message)` is what the watchdog does before the process exits."""

    def __init__(
        self,
        config: pytest.Config,
        grace: float = DEFAULT_GRACE,
        on_stuck: Callable[[pytest.Item, str], None] | None = None,
    ) -> None:
        self.config = config
        self.grace = grace
        self.on_stuck = on_stuck
        self._armed: _Armed | None = None
        self._previous: Any = None
        self._timing = False
        self._watchdog: threading.Timer | None = None
        self._settings: dict[str, tuple[float | None, str]] = {}

    def session_left(self) -> float | None:
        """The seconds the session has left under pytest-timeout's session limit, if any."""
        if not self.config.pluginmanager.hasplugin("timeout"):
            return None
        expire = self.config.stash.get(pytest_timeout.SESSION_EXPIRE_KEY, 0)
        return expire - time.time() if expire else None

    def arm(self, item: pytest.Item, limit: float | None = None, source: str = "") -> None:
        """Start the test's clock: `limit` seconds (None: what pytest-timeout said for it
        before, else the default), said to come from `source`; the session's limit cuts it
        short."""
        if limit is None:
            limit, source = self._settings.get(item.nodeid, (None, ""))
        else:
            self._settings[item.nodeid] = (limit, source)  # for its next attempt
        if threading.current_thread() is not threading.main_thread():
            return  # SIGALRM reaches the main thread only
        if limit is None and self._turned_off(item):
            return
        if limit is None or limit <= 0:
            limit, source = DEFAULT_LIMIT, "the harness's default; set `timeout` to change it"
        left = self.session_left()
        if left is not None and left < limit:
            session = self.config.stash[pytest_timeout.SESSION_TIMEOUT_KEY]
            limit, source = max(left, 0.001), f"what the session's limit of {session:g} s left"
        self.disarm()
        armed = self._armed = _Armed(item.nodeid, limit, source, time.monotonic())
        self._previous = signal.signal(signal.SIGALRM, self._expired)
        self._timing = True
        signal.setitimer(signal.ITIMER_REAL, limit)
        self._watchdog = threading.Timer(limit + self.grace, self._stuck, (item, armed))
        self._watchdog.name = f"harness time limit watchdog {item.nodeid}"
        self._watchdog.daemon = True
        self._watchdog.start()

    def _turned_off(self, item: pytest.Item) -> bool:
        """Whether the test's limit is explicitly 0, pytest-timeout's "no limit" (a marker,
        `--timeout 0`, the ini key or PYTEST_TIMEOUT): then the default does not apply."""
        marker = item.get_closest_marker("timeout")
        if marker is not None:
            value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
            return value in (0, "0")
        if not self.config.pluginmanager.hasplugin("timeout"):
            return False
        return bool(pytest_timeout.get_env_settings(self.config).timeout == 0)

    @property
    def armed(self) -> bool:
        return self._armed is not None

    def disarm(self) -> None:
        """Stop the test's clock and its watchdog."""
        self._stop_timer()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._armed = None

    def _stop_timer(self) -> None:
        if not self._timing:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self._timing = False

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True  # the test's own frames say where it was
        self._stop_timer()  # the watchdog stays until the test has stopped
        armed = self._armed
        if armed is None or pytest_timeout.is_debugging():
            return  # nor does pytest-timeout interrupt a debugger
        raise TimeLimitExceeded(self.message(armed))

    @staticmethod
    def message(armed: _Armed) -> str:
        ran = time.monotonic() - armed.started
        return (
            f"TIMEOUT: {armed.nodeid} ran {ran:.1f} s, over its limit of {armed.limit:g} s "
            f"({armed.source}); its testnets were still up for the artifacts and the report"
        )

    def _stuck(self, item: pytest.Item, armed: _Armed) -> None:
        if self._armed is not armed or pytest_timeout.is_debugging():
            return  # disarmed in the meantime, or someone is debugging it
        message = (
            f"{self.message(armed)}. It did not stop within {self.grace:g} s of its limit "
            f"(stuck where no signal handler runs): ending the session"
        )
        try:
            if self.on_stuck is not None:
                self.on_stuck(item, message)
        finally:
            os._exit(EXIT_STUCK)


class PytestTimeoutHooks:
    """pytest-timeout's hooks, for the tests with a testnet: their limit is armed here (from
    the settings pytest-timeout resolved) instead of by pytest-timeout. Registered only when
    pytest-timeout is (its hooks are unknown otherwise)."""

    def __init__(self, limits: TimeLimits) -> None:
        self.limits = limits

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        if not uses_testnet(item):
            return None
        marker = item.get_closest_marker("timeout")
        source = "its timeout marker" if marker else "the session's --timeout / timeout ini key"
        self.limits.arm(item, settings.timeout, source)
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool | None:
        if not uses_testnet(item):
            return None
        self.limits.disarm()
        return True
