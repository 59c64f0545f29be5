"""Waiting for a condition with a deadline, and a timeout error that says what was last seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness.driver.errors import NodeNotReady

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.05,
) -> T:
    """Call `check` until it returns something other than None (or raises nothing).

    `check` returns the value waited for, or None to keep waiting; an exception it raises counts
    as "not yet" and is remembered. On timeout, `NodeNotReady` names `what`, the time waited,
    the attempts and the last observation.
    """
    start = time.monotonic()
    attempts = 0
    last: str = "nothing observed yet"
    while True:
        attempts += 1
        try:
            value = check()
            if value is not None:
                return value
            last = "condition not met"
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise NodeNotReady(
                f"{what} timed out after {elapsed:.1f}s on attempt {attempts}. Last: {last}"
            )
        time.sleep(min(interval, max(0.0, timeout - elapsed)))
