"""The replica behind the gateway: one `Upstream` interface, and its implementation over
keep-alive connections at the protocol level (`harness.node.upstream_pool`), where what went
wrong becomes ours (`UpstreamUnreachable`, `UpstreamError`), each with the
`harness.node.retry.Failure` that decides whether it is retried.

`PooledUpstream` sends a request as it is given (the proxy has already rewritten the headers;
the pool adds only ``Host`` and ``Content-Length``; header bytes go out exactly as they came)
and reads the answer's raw bytes (no decompression: the client gets exactly what the replica
sent). It sets no timeouts of its own; the caller bounds the whole exchange (`forward`).

No client library on this hot path: aiohttp's pool, URL and header objects cost the gateway
more CPU per forwarded request than everything else it did (bench/RESULTS.md).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from urllib.parse import urlsplit

from harness.node.gateway.errors import UpstreamError, UpstreamUnreachable
from harness.node.retry import Failure
from harness.node.tls import verify_for
from harness.node.upstream_pool import UpstreamFailure, UpstreamPool

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    target: str
    """Path and query, as sent by the client (`/api/v2/status?x=1`)."""
    headers: list[Header]
    body: bytes


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: list[Header]
    """As received, names lowercase; hop-by-hop ones still in (see `headers.to_client`)."""
    body: bytes


class Upstream(abc.ABC):
    """One replica base URL (`http://127.1.0.5:8080`) that requests can be forwarded to."""

    def __init__(self, url: str) -> None:
        self.url = url
        # The metric label, as the real gateway uses it: host and port of the URL.
        self.authority = urlsplit(url).netloc

    @abc.abstractmethod
    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send `request`; raise an `UpstreamError` if there is no answer."""


class PooledUpstream(Upstream):
    """An `Upstream` reached over HTTP/1.1 through a pool of kept-alive connections."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.pool = UpstreamPool(url, verify_for([url]))

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        try:
            answer = await self.pool.request(
                request.method.encode(),
                request.target.encode("latin-1"),
                request.headers,
                request.body,
            )
        except UpstreamFailure as exc:
            failure = exc.failure
            if failure in (Failure.NOT_CONNECTED, Failure.UNANSWERED):
                raise UpstreamUnreachable(self.url, exc.reason, failure) from None
            # The gateway's words: "sent a broken answer: ...", "failed: connection lost: ...".
            said = f"sent a {exc.reason}" if failure is Failure.BROKEN_ANSWER else exc.reason
            if failure is Failure.CONNECTION_LOST:
                said = f"failed: {exc.reason}"
            raise UpstreamError(self.url, said, failure) from None
        return UpstreamResponse(answer.status, answer.headers, answer.body)

    def close(self) -> None:
        self.pool.close()
