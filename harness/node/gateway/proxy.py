"""ic-gateway's plain-HTTP listener as a raw ASGI app: refuse forward-proxy requests, check the
Host, match the route, read the body within the limit, forward to a replica, answer.

Order of checks, first failure answers (see `errors` for codes and messages): absolute-form
target or CONNECT → 400/405; no Host → 400 ``Missing Authority``; Host (port stripped,
case-insensitive, trailing dot ignored) not in `DOMAIN` → 400 ``Unknown Domain``; unknown path
→ 404; wrong method → 405 (``OPTIONS`` on an API route is the CORS preflight: 204); body over
`IC_REQUEST_MAX_SIZE` → 413. The replica's answers, 4xx and 5xx included, are passed on with
their status and body; the gateway's own answers are ``text/plain`` with the IC's CORS headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from harness.node.gateway import headers as rewrite
from harness.node.gateway.config import normalize_host
from harness.node.gateway.errors import (
    ClientError,
    GatewayError,
    MethodNotAllowed,
    NoAuthority,
    NotAProxy,
    NotFound,
    PayloadTooLarge,
    UnknownDomain,
    UpstreamError,
)
from harness.node.gateway.forward import Forwarder
from harness.node.gateway.health import HealthCheck
from harness.node.gateway.metrics import GatewayMetrics
from harness.node.gateway.protocol import PROXY_TARGET
from harness.node.gateway.routes import Target, match_route
from harness.node.gateway.upstream import UpstreamRequest
from harness.node.serve import Receive, Scope, Send
from harness.node.status import CORS_HEADERS

log = logging.getLogger(__name__)

Header = tuple[bytes, bytes]

_CORS: tuple[Header, ...] = tuple((name.encode(), value.encode()) for name, value in CORS_HEADERS)
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_HTTP_LABELS = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2"}
_NO_BODY_STATUSES = frozenset({204, 304})
# nginx's code for a client that left before the answer; used only as a metric label.
CLIENT_CLOSED = 499
_HOST_CACHE_SIZE = 1024


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def host_of(authority: bytes) -> str:
    """The host of a Host header value (`ic0.example:80`, `[::1]:80`), normalized to compare."""
    text = authority.decode("latin-1").strip()
    if text.startswith("["):
        text = text[: text.find("]") + 1]
    else:
        name, sep, port = text.rpartition(":")
        if sep and (port.isdigit() or not port):
            text = name
    return normalize_host(text)


class GatewayApp:
    """The ASGI app on `LISTEN_PLAIN`."""

    def __init__(
        self,
        domains: Collection[str],
        forwarder: Forwarder,
        health: HealthCheck,
        metrics: GatewayMetrics,
        max_body: int,
    ) -> None:
        self.domains = frozenset(domains)
        self.forwarder = forwarder
        self.health = health
        self.metrics = metrics
        self.max_body = max_body
        self._authorities = {upstream.url: upstream.authority for upstream in forwarder.upstreams}
        self._known_hosts: dict[bytes, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        method: str = scope["method"]
        error = "none"
        upstream = ""
        try:
            status, headers, body, upstream = await self._handle(scope, receive)
        except GatewayError as exc:
            status, error = exc.status, exc.label
            body = (exc.message + "\n").encode()
            headers = [_TEXT, *_CORS, *exc.headers, (b"content-length", b"%d" % len(body))]
            if isinstance(exc, UpstreamError):
                upstream = self._authorities.get(exc.upstream, exc.upstream)
                log.warning("%s %s: %s", method, scope["path"], exc.message)
        except _ClientGone:
            self._observe(scope, CLIENT_CLOSED, "client_closed", upstream, started)
            return
        except Exception:
            # Last resort: a bug. Upstream trouble never gets here (it is an UpstreamError).
            log.exception("internal error serving %s %s", method, scope["path"])
            status, error = 500, "general_error"
            body = b"internal error in ic-gateway; the details are in its log\n"
            headers = [_TEXT, *_CORS, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._observe(scope, status, error, upstream, started)

    def _observe(
        self, scope: Scope, status: int, error: str, upstream: str, started: float
    ) -> None:
        version: str = scope["http_version"]
        self.metrics.observe(
            scope["method"],
            _HTTP_LABELS.get(version) or f"HTTP/{version}",
            status,
            error,
            upstream,
            time.perf_counter() - started,
        )

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, list[Header], bytes, str]:
        """Status, headers, body and the upstream's authority ("" when none was asked)."""
        method: str = scope["method"]
        extensions = scope.get("extensions")
        if extensions and PROXY_TARGET in extensions:
            raise NotAProxy(method, extensions[PROXY_TARGET]["target"])
        if method == "CONNECT":
            raise NotAProxy(method, scope["path"])

        request_headers: list[Header] = scope["headers"]
        host: bytes | None = None
        content_length: bytes | None = None
        for name, value in request_headers:
            if name == b"host":
                if host is not None:
                    raise ClientError("Bad Request: more than one Host header")
                host = value
            elif name == b"content-length":
                content_length = value
        if not host:
            raise NoAuthority()
        if not self._host_known(host):
            raise UnknownDomain(host.decode("latin-1"))

        path: str = scope["path"]
        route = match_route(path)
        if route is None:
            raise NotFound(path)
        if method not in route.methods:
            if method == "OPTIONS" and route.target is Target.REPLICA:
                return 204, list(_CORS), b"", ""
            raise MethodNotAllowed(method, path, route.allow)
        if route.target is Target.HEALTH:
            await self.health.check()
            return 204, list(_CORS), b"", ""

        body = await self._read_body(content_length, receive)
        target: str = scope["raw_path"].decode("latin-1")
        query: bytes = scope["query_string"]
        if query:
            target = f"{target}?{query.decode('latin-1')}"
        client = scope.get("client")
        request = UpstreamRequest(
            method,
            target,
            rewrite.to_upstream(
                request_headers, client[0] if client else None, scope["scheme"], host
            ),
            body,
        )
        response, upstream = await self.forwarder.forward(request)
        status = response.status
        headers = rewrite.to_client(response.headers, 200 <= status < 300)
        if method == "HEAD":
            # The replica's Content-Length is that of the GET answer; keep it.
            headers.extend(h for h in response.headers if h[0] == b"content-length")
        elif status not in _NO_BODY_STATUSES:
            headers.append((b"content-length", b"%d" % len(response.body)))
        return status, headers, response.body, upstream.authority

    def _host_known(self, host: bytes) -> bool:
        known = self._known_hosts.get(host)
        if known is None:
            if len(self._known_hosts) >= _HOST_CACHE_SIZE:
                self._known_hosts.clear()
            known = self._known_hosts[host] = host_of(host) in self.domains
        return known

    async def _read_body(self, content_length: bytes | None, receive: Receive) -> bytes:
        """The whole request body; `PayloadTooLarge` as soon as it is known to be too big."""
        limit = self.max_body
        if content_length is not None and content_length.isdigit():
            declared = int(content_length)
            if declared > limit:
                raise PayloadTooLarge(limit, declared)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLarge(limit, len(body))
            return body
        # Chunked (or slow) body: count as it comes, so an endless stream is cut off.
        chunks = [body]
        size = len(body)
        while True:
            if size > limit:
                raise PayloadTooLarge(limit, size)
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        if size > limit:
            raise PayloadTooLarge(limit, size)
        return b"".join(chunks)
