"""Waiting for a condition with a deadline, and a timeout error that says what was last seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from harness.driver.errors import HarnessError, NodeNotReady
from harness.node.status import StatusDecodeError

T = TypeVar("T")

NOT_YET: tuple[type[Exception], ...] = (HarnessError, httpx.HTTPError, OSError, StatusDecodeError)
"""What a check may raise to say "not yet": a node that does not answer (yet), answers an error
or something that is not a status yet. Anything else is a bug in the check or in what it looks
at, and ends the wait at once."""


def wait_until(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.05,
    not_yet: tuple[type[Exception], ...] = NOT_YET,
) -> T:
    """Call `check` until it returns something other than None.

    `check` returns the value waited for, or None to keep waiting; an exception of `not_yet` it
    raises counts as "not yet" and is remembered, any other propagates at once. On timeout,
    `NodeNotReady` names `what`, the time waited, the attempts and the last observation.
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
        except not_yet as exc:
            last = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise NodeNotReady(
                f"{what} timed out after {elapsed:.1f}s on attempt {attempts}. Last: {last}"
            )
        time.sleep(min(interval, max(0.0, timeout - elapsed)))
