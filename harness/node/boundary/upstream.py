"""Forwarding one request to one replica over aiohttp, with aiohttp's errors mapped to ours in
one place (`forward`), each with the `harness.node.retry.Failure` that decides whether the request
goes to the next replica.

Hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``TE``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``, ``Trailer``) are dropped both ways,
as are ``Host`` (the replica's own is sent) and ``Content-Length`` (recomputed). The path and
query go out exactly as the client sent them, and so do header values but for what
`harness.node.http_client` says of non-UTF-8 ones. The replica's status, headers and body
bytes come back as they are (no decompression).

Timeouts (`make_client`), each ``--upstream-timeout``: connecting (after which the replica
counts as unreachable and the next one is tried), and each wait for the replica's answer, from
the end of the request to its first byte and between two later ones. And a whole request may
take three times that (connect, send, answer): aiohttp bounds no write, and a replica that
stops reading (a paused one) would otherwise hold a request with a large body forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from harness.node import http_client
from harness.node.http_client import parser_reason
from harness.node.proxy_headers import HeaderFilter
from harness.node.retry import Failure, failure_of
from harness.node.upstream_pool import os_reason

Headers = list[tuple[bytes, bytes]]

_TO_REPLICA = HeaderFilter((b"host", b"content-length"))
_TO_CLIENT = HeaderFilter((b"content-length", b"date"))  # uvicorn adds its own Date


class UpstreamError(Exception):
    """A replica did not answer; `kind` is the metric label, `status` what the client gets,
    `failure` why, and so whether the next replica is tried (`harness.node.retry`). Its text is
    ``<replica URL>: <reason>``."""

    kind = "other"
    status = 502

    def __init__(self, url: str, failure: Failure, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.failure = failure
        self.reason = reason


class UpstreamUnreachable(UpstreamError):
    """No connection could be made, or it was closed before any answer."""

    kind = "connect"


class UpstreamTimeout(UpstreamError):
    """The replica did not answer in time (see the module docstring)."""

    kind = "timeout"
    status = 504


def make_client(timeout: float) -> aiohttp.ClientSession:
    """A session made for a proxy (`harness.node.http_client.proxy_session`; replicas are plain
    HTTP, an IP and a port from the registry) that bounds each request as the module docstring
    says. Call it in the event loop that uses it."""
    return http_client.proxy_session(
        aiohttp.ClientTimeout(total=3 * timeout, sock_connect=timeout, sock_read=timeout)
    )


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Headers
    body: bytes


async def forward(
    client: aiohttp.ClientSession,
    base_url: str,
    method: str,
    path_and_query: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> UpstreamResponse:
    """Send the request to `base_url`; raise an `UpstreamError` subclass if it fails."""
    sent = http_client.outgoing_headers(
        _TO_REPLICA([(name.lower(), value) for name, value in headers])
    )
    try:
        async with client.request(
            method,
            http_client.url(base_url + path_and_query),
            headers=sent,
            data=body or None,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _error(base_url, exc, client.timeout) from exc
    headers_back = [(name.lower(), value) for name, value in response.raw_headers]
    return UpstreamResponse(response.status, _TO_CLIENT(headers_back), raw)


def _error(
    url: str, exc: aiohttp.ClientError | TimeoutError, timeout: aiohttp.ClientTimeout
) -> UpstreamError:
    """Our error for what aiohttp raised: its words here, its `Failure` from `retry`."""
    failure = failure_of(exc)
    if failure is Failure.NOT_CONNECTED:
        if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unroutable, TLS handshake
            return UpstreamUnreachable(url, failure, f"cannot connect: {os_reason(exc.os_error)}")
        return UpstreamUnreachable(  # `sock_connect`
            url, failure, f"connect timeout: not connected in {_s(timeout.sock_connect)}"
        )
    if failure is Failure.UNANSWERED:
        return UpstreamUnreachable(url, failure, "closed the connection without answering")
    if failure is Failure.TIMED_OUT:
        if isinstance(exc, aiohttp.ServerTimeoutError):  # `sock_read`
            waited = f"nothing received in {_s(timeout.sock_read)}"
        else:  # `total`, the bound of the whole request
            waited = f"not done in {_s(timeout.total)}"
        return UpstreamTimeout(url, failure, f"no answer in time: {waited}")
    if failure is Failure.BROKEN_ANSWER:
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return UpstreamError(
                url, failure, "broken answer: closed the connection half-way through it"
            )
        return UpstreamError(url, failure, f"broken answer: {parser_reason(exc)}")
    if failure is Failure.CONNECTION_LOST and isinstance(exc, OSError):
        return UpstreamError(url, failure, f"connection lost: {os_reason(exc)}")
    return UpstreamError(url, failure, f"{type(exc).__name__}: {exc}")


def _s(seconds: float | None) -> str:
    return "the time allowed" if seconds is None else f"{seconds:g} s"
