"""`ic-boundary` / `python -m harness.node.boundary`: parse the configuration and serve.

Exit codes: 0 after SIGTERM/SIGINT and draining, 2 for bad flags, 1 when an address cannot be
bound or a background task (registry polling, health checks) fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from harness.node.boundary.app import MAX_BODY_BYTES, Boundary, bad_request
from harness.node.boundary.config import BoundaryConfig, load_config
from harness.node.boundary.discovery import RegistryWatcher
from harness.node.boundary.health import HealthChecker
from harness.node.boundary.metrics import BoundaryMetrics
from harness.node.boundary.routing import Balancer, RoutingTable
from harness.node.boundary.upstream import make_client
from harness.node.http_server import HttpServer, bound_address, serve_until_signal
from harness.node.registry import RegistryClient
from harness.node.registry.client import open_source
from harness.node.serve import bind, serve_program

log = logging.getLogger("harness.node.boundary")


class BackgroundTaskFailed(RuntimeError):
    """Registry polling or health checking stopped with an error; routing would go stale."""


async def serve(config: BoundaryConfig) -> None:
    """Serve the API and metrics until a stop signal, keeping the routing table current."""
    static = config.registry_local_store_path is None and config.registry_url is None
    balancer = Balancer(RoutingTable.from_upstreams(config.upstreams) if static else None)
    metrics = BoundaryMetrics(balancer)
    health = HealthChecker(balancer, config.health_check_interval)
    stopped = asyncio.Event()
    failures: list[BaseException] = []

    def watch(task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("%s stopped: %r; shutting down", task.get_name(), exc, exc_info=exc)
            failures.append(exc)
            stopped.set()

    async with make_client(config.upstream_timeout) as client:
        boundary = Boundary(config.tls_hostname, balancer, client, metrics)
        listeners = [
            (
                HttpServer(boundary, bad_request, MAX_BODY_BYTES),
                bind(config.listen_http_addr, "api"),
            ),
            (
                HttpServer(metrics.handler(), bad_request, 0),
                bind(config.obs_metrics_addr, "metrics"),
            ),
        ]
        tasks = [asyncio.create_task(health.run(), name="health checks")]
        if not static:
            registry = RegistryClient(
                open_source(config.registry_local_store_path, config.registry_url),
                on_error=lambda _version, _exc: metrics.registry_errors.inc(),
            )
            watcher = RegistryWatcher(
                registry, balancer, config.registry_poll_interval, health.wake.set
            )
            tasks.append(asyncio.create_task(watcher.run(), name="registry polling"))
        for task in tasks:
            task.add_done_callback(watch)
        log.info(
            "serving the IC API for %s on %s (plain HTTP), metrics on %s, routing from %s",
            config.tls_hostname,
            bound_address(listeners[0][1]),
            bound_address(listeners[1][1]),
            "static --upstreams"
            if static
            else f"registry {config.registry_url or config.registry_local_store_path}",
        )
        try:
            await serve_until_signal(listeners, config.graceful_timeout, stopped)
        finally:
            for task in tasks:
                task.remove_done_callback(watch)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise BackgroundTaskFailed(str(failures[0]))
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        serve_program("ic-boundary", config.log_level, lambda: serve(config), log)
    except BackgroundTaskFailed as exc:
        log.error("exiting: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
