"""`ic-gateway` / `python -m harness.node.gateway`: parse the configuration and serve.

Exit codes: 0 after SIGTERM/SIGINT and draining (at most `--graceful-timeout`), 2 for bad flags
or variables, 1 when a listen address cannot be bound.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from harness.node.gateway.config import GatewayConfig, load_config
from harness.node.gateway.forward import Forwarder
from harness.node.gateway.health import HealthCheck
from harness.node.gateway.metrics import GatewayMetrics
from harness.node.gateway.proxy import Gateway, bad_request
from harness.node.gateway.upstream import PooledUpstream
from harness.node.http_server import HttpServer, bound_address, serve_until_signal
from harness.node.serve import bind, serve_program

log = logging.getLogger("harness.node.gateway")

# A verdict of /health is reused this long, so a flood of health checks is one status request.
HEALTH_TTL = 0.25
HEALTH_TIMEOUT = 5.0


async def serve(config: GatewayConfig) -> None:
    """Serve the gateway (and metrics, if configured) until SIGTERM or SIGINT, then drain."""
    metrics = GatewayMetrics()
    upstreams = [PooledUpstream(url) for url in config.ic_urls]
    forwarder = Forwarder(
        upstreams,
        config.ic_request_retries,
        config.ic_request_retry_interval,
        config.ic_response_timeout,
        on_attempt=lambda upstream, outcome: metrics.attempted(upstream.authority, outcome),
    )
    health = HealthCheck(upstreams, HEALTH_TTL, min(HEALTH_TIMEOUT, config.ic_response_timeout))
    gateway = Gateway(config.domains, forwarder, health, metrics)
    listeners = [
        (
            HttpServer(gateway, bad_request, config.ic_request_max_size),
            bind(config.listen_plain, "gateway"),
        )
    ]
    if config.metrics_listen is not None:
        listeners.append(
            (HttpServer(metrics.handler(), bad_request, 0), bind(config.metrics_listen, "metrics"))
        )
    log.info(
        "serving %s on %s (plain HTTP) for %s; metrics %s",
        ", ".join(config.ic_urls),
        bound_address(listeners[0][1]),
        ", ".join(sorted(config.domains)),
        f"on {bound_address(listeners[1][1])}" if len(listeners) > 1 else "off",
    )
    try:
        await serve_until_signal(listeners, config.graceful_timeout)
    finally:
        for upstream in upstreams:
            upstream.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    serve_program("ic-gateway", config.log_level, lambda: serve(config), log)


if __name__ == "__main__":
    main()
