"""ic-gateway's plain-HTTP listener: the handler that `harness.node.http_server` hands each
request to. It refuses forward-proxy requests, checks the Host, matches the route, reads the
body within the limit, forwards to a replica and answers.

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
from harness.node.gateway.routes import Target, match_route
from harness.node.gateway.upstream import UpstreamRequest
from harness.node.http_server import (
    Answer,
    BadTarget,
    BodyTooLarge,
    ClientGone,
    Request,
    plain_answer,
    split_target,
)
from harness.node.status import CORS_HEADERS

log = logging.getLogger(__name__)

Header = tuple[bytes, bytes]

_CORS: tuple[Header, ...] = tuple((name.encode(), value.encode()) for name, value in CORS_HEADERS)
_HTTP_LABELS = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2"}
_NO_BODY_STATUSES = frozenset({204, 304})
# nginx's code for a client that left before the answer; used only as a metric label.
CLIENT_CLOSED = 499
_HOST_CACHE_SIZE = 1024


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


def bad_request(reason: str) -> Answer:
    """The answer to a request the HTTP parser refuses, saying why."""
    return plain_answer(400, f"Bad Request: {reason}", _CORS)


class Gateway:
    """The handler of `LISTEN_PLAIN` (`harness.node.http_server`)."""

    def __init__(
        self,
        domains: Collection[str],
        forwarder: Forwarder,
        health: HealthCheck,
        metrics: GatewayMetrics,
    ) -> None:
        self.domains = frozenset(domains)
        self.forwarder = forwarder
        self.health = health
        self.metrics = metrics
        self._authorities = {upstream.url: upstream.authority for upstream in forwarder.upstreams}
        self._known_hosts: dict[bytes, bool] = {}

    async def __call__(self, request: Request) -> Answer | None:
        started = time.perf_counter()
        error = "none"
        upstream = ""
        try:
            answer, upstream = await self._handle(request)
        except GatewayError as exc:
            error = exc.label
            answer = plain_answer(exc.status, exc.message, (*_CORS, *exc.headers))
            if isinstance(exc, UpstreamError):
                upstream = self._authorities.get(exc.upstream, exc.upstream)
                log.warning("%s %r: %s", request.method, request.target, exc.message)
        except ClientGone:
            self._observe(request, CLIENT_CLOSED, "client_closed", upstream, started)
            return None
        except Exception:
            # Last resort: a bug. Upstream trouble never gets here (it is an UpstreamError).
            log.exception("internal error serving %s %r", request.method, request.target)
            error = "general_error"
            answer = plain_answer(
                500, "internal error in ic-gateway; the details are in its log", _CORS
            )
        self._observe(request, answer.status, error, upstream, started)
        return answer

    def _observe(
        self, request: Request, status: int, error: str, upstream: str, started: float
    ) -> None:
        version = request.version
        self.metrics.observe(
            request.method,
            _HTTP_LABELS.get(version) or f"HTTP/{version}",
            status,
            error,
            upstream,
            time.perf_counter() - started,
        )

    async def _handle(self, request: Request) -> tuple[Answer, str]:
        """The answer and the upstream's authority ("" when none was asked)."""
        method = request.method
        target = request.target
        if method == "CONNECT" or not (target.startswith(b"/") or target == b"*"):
            raise NotAProxy(method, target.decode("latin-1"))
        try:
            raw_path, query, path = split_target(target)
        except BadTarget as exc:
            raise ClientError(f"Bad Request: {exc}") from None

        host: bytes | None = None
        for name, value in request.headers:
            if name == b"host":
                if host is not None:
                    raise ClientError("Bad Request: more than one Host header")
                host = value
        if not host:
            raise NoAuthority()
        if not self._host_known(host):
            raise UnknownDomain(host.decode("latin-1"))

        route = match_route(path)
        if route is None:
            raise NotFound(path)
        if method not in route.methods:
            if method == "OPTIONS" and route.target is Target.REPLICA:
                return Answer(204, list(_CORS)), ""
            raise MethodNotAllowed(method, path, route.allow)
        if route.target is Target.HEALTH:
            await self.health.check()
            return Answer(204, list(_CORS)), ""

        try:
            body = await request.read_body()
        except BodyTooLarge as exc:
            raise PayloadTooLarge(exc.limit, exc.seen) from None
        forwarded = (raw_path + b"?" + query if query else raw_path).decode("latin-1")
        upstream_request = UpstreamRequest(
            method,
            forwarded,
            rewrite.to_upstream(request.headers, request.client, "http", host),
            body,
        )
        response, upstream = await self.forwarder.forward(upstream_request)
        status = response.status
        headers = rewrite.to_client(response.headers, 200 <= status < 300)
        if method == "HEAD":
            # The replica's Content-Length is that of the GET answer; keep it.
            headers.extend(h for h in response.headers if h[0] == b"content-length")
        elif status not in _NO_BODY_STATUSES:
            headers.append((b"content-length", b"%d" % len(response.body)))
        return Answer(status, headers, response.body), upstream.authority

    def _host_known(self, host: bytes) -> bool:
        known = self._known_hosts.get(host)
        if known is None:
            if len(self._known_hosts) >= _HOST_CACHE_SIZE:
                self._known_hosts.clear()
            known = self._known_hosts[host] = host_of(host) in self.domains
        return known
