"""Probing replicas: every interval, GET each replica's `/api/v2/status` and keep the healthy set.

A replica is healthy when its status answers 200 with a CBOR status record whose
`replica_health_status` is ``healthy`` within the probe timeout (the check interval, at least
1 s). Anything else (refused connection, timeout, other status code, undecodable body, another
health state) makes it unhealthy until a later probe says otherwise. Transitions are logged.

While some replica is unhealthy, the next round comes sooner: after `RECHECK_FIRST` seconds,
doubling up to the interval (replicas that are still starting are routed to as soon as they are
up, not up to an interval later); once all are healthy, every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from harness.node.boundary.routing import Balancer, Replica
from harness.node.status import STATUS_PATH, StatusDecodeError, decode_status
from harness.node.tls import verify_for

log = logging.getLogger(__name__)

RECHECK_FIRST = 0.05


async def probe(client: httpx.AsyncClient, replica: Replica, timeout: float) -> str | None:
    """None when `replica` is healthy, else why not."""
    try:
        response = await client.get(replica.url + STATUS_PATH, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.status_code != 200:
        return f"status answered {response.status_code}"
    try:
        status = decode_status(response.content)
    except StatusDecodeError as exc:
        return str(exc)
    if not status.is_healthy:
        return f"replica_health_status is {status.replica_health_status!r}"
    return None


class HealthChecker:
    """Probes every replica of the balancer's table, each round concurrently."""

    def __init__(self, balancer: Balancer, interval: float) -> None:
        self.balancer = balancer
        self.interval = interval
        self.timeout = max(1.0, interval)
        self.wake = asyncio.Event()
        self._problems: dict[Replica, str | None] = {}

    @property
    def all_healthy(self) -> bool:
        return all(problem is None for problem in self._problems.values())

    async def check_once(self, client: httpx.AsyncClient) -> None:
        table = self.balancer.table
        replicas = sorted(table.replicas, key=lambda r: (r.node_id, r.url))
        results = await asyncio.gather(*(probe(client, r, self.timeout) for r in replicas))
        if self.balancer.table is not table:
            # The registry changed during the round; the next (immediate) round covers it.
            return
        for replica, problem in zip(replicas, results, strict=True):
            before = self._problems.get(replica, "not probed yet")
            if problem is None and before is not None:
                log.info("replica %s is healthy", replica)
            elif problem is not None and problem != before:
                log.warning("replica %s is unhealthy: %s", replica, problem)
        self._problems = dict(zip(replicas, results, strict=True))
        self.balancer.set_healthy(r for r, p in self._problems.items() if p is None)

    async def run(self) -> None:
        """Probe until cancelled: every `interval` (sooner while a replica is unhealthy), and
        at once when `wake` is set."""
        # Replicas are plain HTTP (an IP and a port from the registry): no TLS context.
        recheck = RECHECK_FIRST
        async with httpx.AsyncClient(trust_env=False, verify=verify_for(())) as client:
            while True:
                self.wake.clear()
                await self.check_once(client)
                if self.all_healthy:
                    delay, recheck = self.interval, RECHECK_FIRST
                else:
                    delay, recheck = min(recheck, self.interval), recheck * 2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
