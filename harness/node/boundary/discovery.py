"""Keeping the routing table current: poll the registry store and install each new version.

The store is read with `RegistryClient`, so a corrupt version is logged, counted and skipped
while the last good version stays in use. A new version wakes the health checker, so added
replicas are probed (and can serve) without waiting a full health-check interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from harness.node.boundary.routing import Balancer, RoutingTable
from harness.node.registry import RegistryClient

log = logging.getLogger(__name__)


class RegistryWatcher:
    """Polls a `RegistryClient` and hands new versions to the balancer."""

    def __init__(
        self,
        client: RegistryClient,
        balancer: Balancer,
        interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self.client = client
        self.balancer = balancer
        self.interval = interval
        self.on_change = on_change

    async def poll_once(self) -> None:
        # File reads: keep them off the event loop that serves requests.
        snapshot = await asyncio.to_thread(self.client.poll)
        if snapshot is None or snapshot.version == self.balancer.table.version:
            return
        table = RoutingTable.from_snapshot(snapshot)
        log.info(
            "using registry version %d: %d subnet(s), %d replica(s)",
            snapshot.version,
            len(table.subnets),
            len(table.replicas),
        )
        self.balancer.set_table(table)
        self.on_change()

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)
