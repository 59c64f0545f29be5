"""The replica behind the gateway: one `Upstream` interface, its aiohttp implementation, and the
one place where aiohttp's errors become ours (`UpstreamUnreachable`, `UpstreamError`), each with
the `harness.node.retry.Failure` that decides whether it is retried.

`AiohttpUpstream` sends requests as they are given (the proxy has already rewritten headers;
aiohttp adds only ``Host`` and ``Content-Length``; header values as `harness.node.http_client`
says) through shared keep-alive pools (`Clients`) and reads the answer's raw bytes (no
decompression: the client gets exactly what the replica sent). It sets no timeouts of its own;
the caller bounds the whole exchange (`forward`).

aiohttp, not httpx, on this hot path: its C parser and its pool cost the gateway 0.18 ms of CPU
per forwarded request where httpx over httpcore and anyio cost 0.42 ms (bench/RESULTS.md).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from harness.node import http_client
from harness.node.gateway.errors import UpstreamError, UpstreamUnreachable
from harness.node.http_client import os_reason, parser_reason
from harness.node.retry import Failure, failure_of

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
        """Send `request`; raise an `UpstreamError` (never an httpx error) if there is no answer."""


class Clients:
    """`count` aiohttp sessions made for a proxy (`harness.node.http_client`), each with its own
    keep-alive pool, used in turn, like the real gateway's `--network-http-client-count` HTTP
    clients. No timeouts: the `Forwarder` bounds each request. Pools open connections only
    when used.
    """

    def __init__(self, count: int, urls: Iterable[str] = ()) -> None:
        no_timeouts = aiohttp.ClientTimeout()
        self.sessions = [
            http_client.proxy_session(no_timeouts, urls, limit=256) for _ in range(max(1, count))
        ]
        self._next = 0

    def next(self) -> aiohttp.ClientSession:
        session = self.sessions[self._next]
        self._next = (self._next + 1) % len(self.sessions)
        return session

    async def aclose(self) -> None:
        for session in self.sessions:
            await session.close()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AiohttpUpstream(Upstream):
    """An `Upstream` reached over HTTP through shared `Clients`."""

    def __init__(self, url: str, clients: Clients) -> None:
        super().__init__(url)
        self.clients = clients

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        try:
            async with self.clients.next().request(
                request.method,
                http_client.url(self.url + request.target),
                headers=http_client.outgoing_headers(request.headers),
                data=request.body or None,
                allow_redirects=False,
            ) as response:
                body = await response.read()
        except aiohttp.ClientError as exc:
            raise _error(self.url, exc) from exc
        return UpstreamResponse(
            response.status, [(name.lower(), value) for name, value in response.raw_headers], body
        )


def _error(url: str, exc: aiohttp.ClientError) -> UpstreamError:
    """Our error for what aiohttp raised: its words here, its `Failure` from `retry`."""
    failure = failure_of(exc)
    if failure is Failure.NOT_CONNECTED and isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(url, os_reason(exc.os_error), failure)
    if failure is Failure.UNANSWERED:
        # E.g. a kept-alive connection the replica just shut; a connect error by its label.
        return UpstreamUnreachable(url, "closed the connection unanswered", failure)
    if failure is Failure.BROKEN_ANSWER:
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return UpstreamError(url, "sent a broken answer: closed it half-way", failure)
        return UpstreamError(url, f"sent a broken answer: {parser_reason(exc)}", failure)
    if failure is Failure.CONNECTION_LOST and isinstance(exc, OSError):
        return UpstreamError(url, f"failed: connection lost: {os_reason(exc)}", failure)
    return UpstreamError(url, f"failed: {type(exc).__name__}: {exc}", failure)
