"""Forwarding one request to one replica over kept-alive connections at the protocol level
(`harness.node.upstream_pool`, one pool per replica URL), with what went wrong worded in one
place (`forward`), each with the `harness.node.retry.Failure` that decides whether the request
goes to the next replica.

Hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``TE``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``, ``Trailer``) are dropped both ways,
as are ``Host`` (the replica's own is sent) and ``Content-Length`` (recomputed). The path and
query go out exactly as the client sent them, and so do header values, byte for byte. The
replica's status, headers and body bytes come back as they are (no decompression).

Timeouts (`make_client`), each ``--upstream-timeout``: connecting (after which the replica
counts as unreachable and the next one is tried), and each wait for the replica's answer, from
the end of the request to its first byte and between two later ones. And once connected, a
request may take three times that (send and answer): a replica that stops reading (a paused
one) would otherwise hold a request with a large body forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.node.proxy_headers import HeaderFilter
from harness.node.retry import Failure
from harness.node.tls import verify_for
from harness.node.upstream_pool import Timeouts, UpstreamFailure, UpstreamPool

Headers = list[tuple[bytes, bytes]]

_TO_REPLICA = HeaderFilter((b"host", b"content-length"))
_TO_CLIENT = HeaderFilter((b"content-length", b"date"))  # the server adds its own Date


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


class Pools:
    """One `UpstreamPool` per replica URL, made when first asked for, all with the timeouts
    of the module docstring. Close it (``async with``) to close their idle connections."""

    def __init__(self, timeout: float) -> None:
        self.timeouts = Timeouts(connect=timeout, read=timeout, total=3 * timeout)
        self._pools: dict[str, UpstreamPool] = {}

    def pool(self, url: str) -> UpstreamPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = UpstreamPool(url, verify_for([url]), timeouts=self.timeouts)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    async def __aenter__(self) -> Pools:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def make_client(timeout: float) -> Pools:
    """The replicas' connection pools, each request bounded as the module docstring says."""
    return Pools(timeout)


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Headers
    body: bytes


async def forward(
    client: Pools,
    base_url: str,
    method: str,
    path_and_query: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> UpstreamResponse:
    """Send the request to `base_url`; raise an `UpstreamError` subclass if it fails."""
    sent = _TO_REPLICA([(name.lower(), value) for name, value in headers])
    try:
        answer = await client.pool(base_url).request(
            method.encode("latin-1"), path_and_query.encode("latin-1"), sent, body
        )
    except UpstreamFailure as exc:
        raise _error(base_url, exc) from None
    return UpstreamResponse(answer.status, _TO_CLIENT(answer.headers), answer.body)


def _error(url: str, exc: UpstreamFailure) -> UpstreamError:
    """Our error for what the pool said: ic-boundary's words, the pool's `Failure`."""
    failure, reason = exc.failure, exc.reason
    if failure is Failure.NOT_CONNECTED:
        if not reason.startswith("connect timeout"):
            reason = f"cannot connect: {reason}"
        return UpstreamUnreachable(url, failure, reason)
    if failure is Failure.UNANSWERED:
        return UpstreamUnreachable(url, failure, "closed the connection without answering")
    if failure is Failure.TIMED_OUT:
        return UpstreamTimeout(url, failure, reason)
    return UpstreamError(url, failure, reason)
