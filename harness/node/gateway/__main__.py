"""`ic-gateway` / `python -m harness.node.gateway`: parse the configuration and serve.

Exit codes: 0 after SIGTERM/SIGINT and draining (at most `--graceful-timeout`), 2 for bad flags
or variables, 1 when a listen address cannot be bound.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence

from harness.node.gateway.config import GatewayConfig, load_config
from harness.node.gateway.forward import Forwarder
from harness.node.gateway.health import HealthCheck
from harness.node.gateway.metrics import GatewayMetrics
from harness.node.gateway.protocol import GatewayHttpProtocol
from harness.node.gateway.proxy import GatewayApp
from harness.node.gateway.upstream import AiohttpUpstream, Clients
from harness.node.serve import Servers, serve_program

log = logging.getLogger("harness.node.gateway")

# A verdict of /health is reused this long, so a flood of health checks is one status request.
HEALTH_TTL = 0.25
HEALTH_TIMEOUT = 5.0


async def serve(config: GatewayConfig) -> None:
    """Serve the gateway (and metrics, if configured) until a stop signal, then drain."""
    metrics = GatewayMetrics()
    servers = Servers(graceful_timeout=max(1, math.ceil(config.graceful_timeout)))
    async with Clients(config.network_http_client_count, config.ic_urls) as clients:
        upstreams = [AiohttpUpstream(url, clients) for url in config.ic_urls]
        forwarder = Forwarder(
            upstreams,
            config.ic_request_retries,
            config.ic_request_retry_interval,
            config.ic_response_timeout,
            on_attempt=lambda upstream, outcome: metrics.attempted(upstream.authority, outcome),
        )
        health = HealthCheck(upstreams, HEALTH_TTL, min(HEALTH_TIMEOUT, config.ic_response_timeout))
        app = GatewayApp(config.domains, forwarder, health, metrics, config.ic_request_max_size)
        servers.add("gateway", app, config.listen_plain, http=GatewayHttpProtocol)
        if config.metrics_listen is not None:
            servers.add("metrics", metrics.app(), config.metrics_listen)
        log.info(
            "serving %s on %s (plain HTTP) for %s; metrics %s",
            ", ".join(config.ic_urls),
            servers.bound("gateway"),
            ", ".join(sorted(config.domains)),
            f"on {servers.bound('metrics')}" if config.metrics_listen is not None else "off",
        )
        await servers.run()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    serve_program("ic-gateway", config.log_level, lambda: serve(config), log)


if __name__ == "__main__":
    main()
