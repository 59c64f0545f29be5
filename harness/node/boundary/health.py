"""Probing replicas: every interval, GET each replica's `/api/v2/status` and keep the healthy set.

A replica is healthy when its status answers 200 with a CBOR status record whose
`replica_health_status` is ``healthy`` within the probe timeout (the check interval, at least
1 s, bounding each step as `upstream` bounds a forwarded request). Anything else (refused
connection, timeout, other status code, undecodable body, another health state) makes it
unhealthy until a later probe says otherwise. Transitions are logged.

While some replica is unhealthy, the next round comes sooner: after `RECHECK_FIRST` seconds,
doubling up to the interval (replicas that are still starting are routed to as soon as they are
up, not up to an interval later); once all are healthy, every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from harness.node.boundary.routing import Balancer, Replica
from harness.node.boundary.upstream import Pools, UpstreamError, forward, make_client
from harness.node.status import STATUS_PATH, StatusDecodeError, decode_status

log = logging.getLogger(__name__)

RECHECK_FIRST = 0.05


async def probe(client: Pools, replica: Replica) -> str | None:
    """None when `replica` is healthy, else why not. `client` is one of `make_client`'s,
    whose timeouts bound the probe."""
    try:
        response = await forward(client, replica.url, "GET", STATUS_PATH, (), b"")
    except UpstreamError as exc:
        return exc.reason  # the log line names the replica already
    if response.status != 200:
        return f"status answered {response.status}"
    try:
        status = decode_status(response.body)
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

    async def check_once(self, client: Pools) -> None:
        table = self.balancer.table
        replicas = sorted(table.replicas, key=lambda r: (r.node_id, r.url))
        results = await asyncio.gather(*(probe(client, r) for r in replicas))
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
        recheck = RECHECK_FIRST
        async with make_client(self.timeout) as client:
            while True:
                self.wake.clear()
                await self.check_once(client)
                if self.all_healthy:
                    delay, recheck = self.interval, RECHECK_FIRST
                else:
                    delay, recheck = min(recheck, self.interval), recheck * 2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
