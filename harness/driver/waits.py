"""Waiting for a condition with a deadline, and a timeout error that says what was last seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from harness.driver.errors import HarnessError, NodeNotReady
from harness.node.status import StatusDecodeError

T = TypeVar("T")

NOT_YET: tuple[type[Exception], ...] = (HarnessError, httpx.HTTPError, OSError, StatusDecodeError)
"""What a check may raise to say "not yet": a node that does not answer (yet), answers an error
or something that is not a status yet. Anything else is a bug in the check or in what it looks
at, and ends the wait at once."""


class GiveUp(HarnessError):
    """Raised by a wait's check when what it waits for will not come (the process it waits for
    has exited, say): the wait ends at once with it, however long it had left."""


class _Attempts:
    """What a wait has seen so far: its attempts, the last observation, its time."""

    def __init__(self, what: str, timeout: float, not_yet: tuple[type[Exception], ...]) -> None:
        self.what = what
        self.timeout = timeout
        self.not_yet = not_yet
        self.start = time.monotonic()
        self.count = 0
        self.last = "nothing observed yet"

    def saw(self, exc: Exception | None) -> None:
        """One attempt: its check returned None (`exc` None) or raised `exc`, which is raised
        again unless it says "not yet"."""
        self.count += 1
        if exc is None:
            self.last = "condition not met"
        elif isinstance(exc, GiveUp) or not isinstance(exc, self.not_yet):
            raise exc
        else:
            self.last = f"{type(exc).__name__}: {exc}"

    def pause(self, interval: float) -> float:
        """How long to sleep before the next attempt; `NodeNotReady` when the time is up."""
        elapsed = time.monotonic() - self.start
        if elapsed >= self.timeout:
            raise NodeNotReady(
                f"{self.what} timed out after {elapsed:.1f}s on attempt {self.count}. "
                f"Last: {self.last}"
            )
        return min(interval, max(0.0, self.timeout - elapsed))


def wait_until(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.05,
    not_yet: tuple[type[Exception], ...] = NOT_YET,
) -> T:
    """Call `check` until it returns something other than None.

    `check` returns the value waited for, or None to keep waiting; an exception of `not_yet` it
    raises counts as "not yet" and is remembered, any other propagates at once, as does
    `GiveUp` (the check's way to end the wait: it will not come). On timeout,
    `NodeNotReady` names `what`, the time waited, the attempts and the last observation.
    """
    attempts = _Attempts(what, timeout, not_yet)
    while True:
        try:
            value = check()
        except Exception as exc:
            attempts.saw(exc)
        else:
            if value is not None:
                return value
            attempts.saw(None)
        time.sleep(attempts.pause(interval))


async def await_until(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    timeout: float,
    interval: float = 0.05,
    not_yet: tuple[type[Exception], ...] = NOT_YET,
) -> T:
    """`wait_until` for an async check, in an event loop."""
    attempts = _Attempts(what, timeout, not_yet)
    while True:
        try:
            value = await check()
        except Exception as exc:
            attempts.saw(exc)
        else:
            if value is not None:
                return value
            attempts.saw(None)
        await asyncio.sleep(attempts.pause(interval))
