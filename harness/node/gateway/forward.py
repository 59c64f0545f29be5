"""Forwarding with the real gateway's retry policy, round-robin over the `IC_URL`s, under one
deadline.

A request is tried at most `IC_REQUEST_RETRIES` times in all (the real gateway counts the same
way; 0 and 1 both mean one attempt), pausing `IC_REQUEST_RETRY_INTERVAL` before the first retry
and doubling the pause after each. Which failures and answers are retried is the rule shared
with ic-boundary, `harness.node.retry` (could not connect, closed unanswered, 429 or 5xx); the
last answer is passed on when all attempts answered that way. Each request starts at the next
URL of the list and each retry moves on to the one after. Attempts, pauses and reading the
answer together get `IC_RESPONSE_TIMEOUT`; past it during an attempt the request fails with
`UpstreamTimeout` (504), during a pause it ends with what the last attempt gave. The deadlines
are kept by one sweep every `SWEEP_INTERVAL` (a deadline fires up to that late), not by a timer
per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from harness.node.gateway.errors import UpstreamError, UpstreamTimeout
from harness.node.gateway.upstream import Upstream, UpstreamRequest, UpstreamResponse
from harness.node.retry import retryable_status

log = logging.getLogger(__name__)

# Called once per attempt with the upstream and the outcome: a status code or an error label.
AttemptHook = Callable[[Upstream, str], None]


SWEEP_INTERVAL = 0.02
"""How often the deadlines of the requests in flight are looked at: how late one may fire."""


class _Deadlines:
    """The deadlines of the requests in flight, kept by one task that looks at them every
    `interval` while there are any, and cancels the request tasks past theirs: no timer per
    request (`asyncio.timeout` arms and cancels one each, a libuv timer on uvloop, which cost
    as much as a tenth of the gateway's own work per request)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, task: asyncio.Task[Any], deadline: float) -> None:
        self._deadlines[task] = deadline
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def unwatch(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching `task`; whether it was cancelled for its deadline."""
        self._deadlines.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._deadlines:
                await asyncio.sleep(self.interval)
                now = loop.time()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._sweeper = None


class Forwarder:
    """Sends requests to a list of upstreams with retries, round-robin and a deadline."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        retries: int,
        retry_interval: float,
        timeout: float,
        on_attempt: AttemptHook | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("a Forwarder needs at least one upstream")
        self.upstreams = tuple(upstreams)
        self.attempts = max(1, retries)
        self.retry_interval = retry_interval
        self.timeout = timeout
        self.on_attempt = on_attempt
        self._next = 0
        self._deadlines = _Deadlines(SWEEP_INTERVAL)

    async def forward(self, request: UpstreamRequest) -> tuple[UpstreamResponse, Upstream]:
        """The answer and the upstream that gave it; raise `UpstreamError` if there is none."""
        first = self._next
        self._next = (first + 1) % len(self.upstreams)
        upstream = self.upstreams[first]
        # What the last finished attempt gave, for a deadline that falls in a pause.
        outcome: UpstreamResponse | UpstreamError | None = None
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.watch(task, asyncio.get_running_loop().time() + self.timeout)
        try:
            pause = self.retry_interval
            for attempt in range(self.attempts):
                upstream = self.upstreams[(first + attempt) % len(self.upstreams)]
                last = attempt == self.attempts - 1
                outcome = None
                try:
                    response = await upstream.forward(request)
                except UpstreamError as exc:
                    outcome = exc
                    self._attempted(upstream, exc.label)
                    if last or not exc.failure.retryable:
                        raise
                    log.debug("retrying %s in %gs: %s", request.target, pause, exc)
                else:
                    outcome = response
                    self._attempted(upstream, str(response.status))
                    if last or not retryable_status(response.status):
                        return response, upstream
                    log.debug("retrying %s in %gs: got %d", request.target, pause, response.status)
                await asyncio.sleep(pause)
                pause *= 2
        except asyncio.CancelledError:
            if not self._deadlines.unwatch(task):
                raise  # cancelled from outside, not for the deadline
            if task.uncancel() > 0:
                raise  # cancelled from outside as well
            if isinstance(outcome, UpstreamResponse):
                return outcome, upstream
            if isinstance(outcome, UpstreamError):
                raise outcome from None
            self._attempted(upstream, UpstreamTimeout.label)
            raise UpstreamTimeout(upstream.url, self.timeout) from None
        finally:
            self._deadlines.unwatch(task)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempted(self, upstream: Upstream, outcome: str) -> None:
        if self.on_attempt is not None:
            self.on_attempt(upstream, outcome)
