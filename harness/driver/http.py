"""The driver's HTTP client for the endpoints of nodes and of a testnet's Prometheus: plain
HTTP, nothing taken from the environment (no proxy, no .netrc: a testnet's addresses are the
harness's own, and a proxy that CI sets must not see them), and the process's shared TLS context
that verifies nothing (`harness.node.tls.plain_http`: no CA bundle loaded per client)."""

from __future__ import annotations

import httpx

from harness.node.tls import plain_http


def plain_client(timeout: float | None = None) -> httpx.Client:
    """A client for plain-HTTP endpoints of the testnet (`timeout` None: httpx's default)."""
    if timeout is None:
        return httpx.Client(trust_env=False, verify=plain_http())
    return httpx.Client(trust_env=False, verify=plain_http(), timeout=timeout)
