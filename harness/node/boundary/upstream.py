"""Forwarding one request to one replica, with httpx errors mapped to ours in one place.

Hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``TE``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``, ``Trailer``) are dropped both ways,
as are ``Host`` (the replica's own is sent) and ``Content-Length`` (recomputed). The replica's
status and body bytes are kept as they are (no decompression).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from harness.node.proxy_headers import HeaderFilter
from harness.node.tls import verify_for

Headers = list[tuple[bytes, bytes]]

_TO_REPLICA = HeaderFilter((b"host", b"content-length"))
_TO_CLIENT = HeaderFilter((b"content-length", b"date"))  # uvicorn adds its own Date


class UpstreamError(Exception):
    """A replica did not answer; `kind` is the metric label, `status` what the client gets."""

    kind = "other"
    status = 502


class UpstreamUnreachable(UpstreamError):
    """No connection could be made: the request never reached the replica, retrying is safe."""

    kind = "connect"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    status = 504


def make_client(timeout: float) -> httpx.AsyncClient:
    """A client that adds nothing of its own: no proxy from the environment, and none of
    httpx's default Accept, Accept-Encoding and User-Agent (the caller's are forwarded)."""
    client = httpx.AsyncClient(
        timeout=timeout,
        trust_env=False,
        limits=httpx.Limits(max_connections=None),
        verify=verify_for(()),  # replicas are plain HTTP (an IP and a port from the registry)
    )
    for name in ("accept", "accept-encoding", "user-agent"):
        del client.headers[name]
    return client


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Headers
    body: bytes


def _lowercase(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    return [(name.lower(), value) for name, value in headers]


async def forward(
    client: httpx.AsyncClient,
    base_url: str,
    method: str,
    path_and_query: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> UpstreamResponse:
    """Send the request to `base_url`; raise an `UpstreamError` subclass if it fails."""
    request = client.build_request(
        method,
        base_url + path_and_query,
        headers=_TO_REPLICA(_lowercase(headers)),
        content=body,
    )
    try:
        response = await client.send(request, stream=True)
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
    except httpx.ConnectTimeout as exc:
        # Connecting timed out: the request was not sent, so it is as safe to retry as a refusal.
        raise UpstreamUnreachable(f"{base_url}: connect timeout") from exc
    except httpx.ConnectError as exc:
        raise UpstreamUnreachable(f"{base_url}: cannot connect: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{base_url}: no answer in time ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{base_url}: {type(exc).__name__}: {exc}") from exc
    return UpstreamResponse(response.status_code, _TO_CLIENT(_lowercase(response.headers.raw)), raw)
