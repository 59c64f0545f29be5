"""The replica behind the gateway: one `Upstream` interface, its httpx implementation, and the
one place where httpx errors become ours (`UpstreamUnreachable`, `UpstreamError`).

`HttpxUpstream` sends requests as they are given (the proxy has already rewritten headers;
httpx adds only ``Host`` and ``Content-Length``) through shared keep-alive pools (`Transports`)
and reads the answer's raw bytes (no decompression: the client gets exactly what the replica
sent). It sets no timeouts of its own; the caller bounds the whole exchange (`forward`).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from harness.node.gateway.errors import UpstreamError, UpstreamUnreachable
from harness.node.tls import verify_for

Header = tuple[bytes, bytes]
_URL_CACHE_SIZE = 1024


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


class Transports:
    """`count` keep-alive connection pools used in turn, like the real gateway's
    `--network-http-client-count`.

    httpx transports, not `AsyncClient`s: a client keeps a cookie jar, so one client's
    ``Set-Cookie`` would go out with other clients' requests, and its per-request cookie, auth
    and redirect handling cost more than the rest of a forward. Several pools, because httpcore's
    pool does work in proportion to its connections for every request (a poll of each idle
    one, a scan of all): on the development machine one pool cost 0.9 ms of CPU per request
    alone and 3.1 ms at 64 concurrent requests, 32 pools 0.8 ms at any concurrency up to 64.
    Pools open connections only when used, so unused ones cost nothing.
    """

    def __init__(self, count: int, urls: Iterable[str] = ()) -> None:
        # Idle connections are dropped after 4 s, before a uvicorn replica's 5 s keep-alive
        # timeout closes them: reusing a connection the replica is closing fails the request.
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=32, keepalive_expiry=4)
        # One TLS context for all, and only for https upstreams `urls` (see harness.node.tls).
        tls = verify_for(urls)
        self.transports = [
            httpx.AsyncHTTPTransport(verify=tls, limits=limits, trust_env=False)
            for _ in range(max(1, count))
        ]
        self._next = 0

    def next(self) -> httpx.AsyncHTTPTransport:
        transport = self.transports[self._next]
        self._next = (self._next + 1) % len(self.transports)
        return transport

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()

    async def __aenter__(self) -> Transports:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HttpxUpstream(Upstream):
    """An `Upstream` reached over HTTP through shared `Transports`."""

    def __init__(self, url: str, transports: Transports) -> None:
        super().__init__(url)
        self.transports = transports
        # Parsing a URL costs more than the rest of building a request; targets repeat.
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, target: str) -> httpx.URL:
        url = self._urls.get(target)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[target] = httpx.URL(self.url + target)
        return url

    async def forward(self, request: UpstreamRequest) -> UpstreamResponse:
        outgoing = httpx.Request(
            request.method, self._url(request.target), headers=request.headers, content=request.body
        )
        try:
            response = await self.transports.next().handle_async_request(outgoing)
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UpstreamUnreachable(self.url, _describe(exc)) from exc
        except httpx.RemoteProtocolError as exc:
            if "without sending a response" in str(exc):
                # Closed before answering (e.g. a kept-alive connection the replica just shut):
                # nothing was processed, as safe to retry as a refused connection.
                raise UpstreamUnreachable(self.url, _describe(exc)) from exc
            raise UpstreamError(self.url, f"sent a broken answer: {_describe(exc)}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(self.url, f"failed: {_describe(exc)}") from exc
        headers = [(name.lower(), value) for name, value in response.headers.raw]
        return UpstreamResponse(response.status_code, headers, body)


def _describe(exc: Exception) -> str:
    """What went wrong, as the OS said it when there is an OS error under the httpx one
    (anyio words a refused connection "All connection attempts failed")."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
