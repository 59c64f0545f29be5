"""`GET /health`: whether a replica behind the gateway says it is healthy, cached briefly.

The verdict comes from the replicas' own `/api/v2/status` (`replica_health_status` must be
`healthy`), asked in the order of `IC_URL`; the first healthy one makes the gateway healthy.
A verdict is reused for `ttl` seconds, and callers that arrive while a probe is running wait
for that probe, so a flood of health checks sends at most one status request per `ttl`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from harness.node.gateway.errors import UpstreamError, UpstreamUnhealthy
from harness.node.gateway.upstream import Upstream, UpstreamRequest
from harness.node.status import CONTENT_TYPE_CBOR, STATUS_PATH, StatusDecodeError, decode_status

_PROBE = UpstreamRequest("GET", STATUS_PATH, [(b"accept", CONTENT_TYPE_CBOR.encode())], b"")


class HealthCheck:
    """Probes upstreams' status; `check()` returns None if healthy or raises the reason."""

    def __init__(self, upstreams: Sequence[Upstream], ttl: float, timeout: float) -> None:
        self.upstreams = tuple(upstreams)
        self.ttl = ttl
        self.timeout = timeout
        self._verdict: UpstreamError | None = None
        self._expires = float("-inf")
        self._probe: asyncio.Task[UpstreamError | None] | None = None

    async def check(self) -> None:
        """Return if a replica is healthy; raise the `UpstreamError` saying why none is."""
        if time.monotonic() >= self._expires:
            if self._probe is None:
                self._probe = asyncio.create_task(self._run_probe())
            # Shielded: one caller going away must not cancel the probe the others wait for.
            await asyncio.shield(self._probe)
        if self._verdict is not None:
            # The cached error is raised again and again; drop the traceback it gathered.
            raise self._verdict.with_traceback(None)

    async def _run_probe(self) -> UpstreamError | None:
        try:
            verdict = await self._probe_all()
        finally:
            self._probe = None
        self._verdict = verdict
        self._expires = time.monotonic() + self.ttl
        return verdict

    async def _probe_all(self) -> UpstreamError | None:
        first: UpstreamError | None = None
        for upstream in self.upstreams:
            verdict = await self._probe_one(upstream)
            if verdict is None:
                return None
            first = first or verdict
        return first

    async def _probe_one(self, upstream: Upstream) -> UpstreamError | None:
        try:
            async with asyncio.timeout(self.timeout):
                response = await upstream.forward(_PROBE)
        except TimeoutError:
            return UpstreamUnhealthy(upstream.url, f"no status answer within {self.timeout:g}s")
        except UpstreamError as exc:
            # /health answers 503 whatever went wrong, saying what.
            return UpstreamUnhealthy(
                upstream.url, exc.message.removeprefix(f"upstream {upstream.url} ")
            )
        if response.status != 200:
            return UpstreamUnhealthy(upstream.url, f"{STATUS_PATH} answered {response.status}")
        try:
            status = decode_status(response.body)
        except StatusDecodeError as exc:
            return UpstreamUnhealthy(upstream.url, str(exc))
        if not status.is_healthy:
            return UpstreamUnhealthy(
                upstream.url, f"replica_health_status is {status.replica_health_status!r}"
            )
        return None
