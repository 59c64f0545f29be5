"""ic-boundary's API as a raw ASGI app: check the Host, match the route, forward to a replica.

Answers of ic-boundary's own are ``text/plain`` with the IC's CORS headers:

- 400 ``Missing Authority`` / ``Unknown Domain``: no Host, or a Host that is neither
  ``--tls-hostname`` nor the IP literal of the address the request came in on;
- 404 unknown path or unknown subnet; 405 wrong method (with ``Allow``); 413 body over 5 MiB;
- 503 ``no healthy replica for subnet <id>``; 502 replica unreachable or broken answer;
  504 replica too slow (``--upstream-timeout``).

A request that fails in a way `harness.node.retry` calls retryable (no connection, closed before
any answer, a 429 or 5xx answer) goes to the next healthy replica of the same pool, each replica
tried once; when none is left the last answer, or error, is the client's. A replica that could
not be connected to is also marked unhealthy until its next good probe.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from harness.node.boundary.metrics import NO_SUBNET, BoundaryMetrics
from harness.node.boundary.routing import Balancer, NoReplica, RouteMismatch, Target, match_route
from harness.node.boundary.upstream import Headers, UpstreamError, UpstreamResponse, forward
from harness.node.retry import Failure, retryable_status
from harness.node.serve import Receive, Scope, Send
from harness.node.status import CORS_HEADERS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
_CORS = [(name.encode(), value.encode()) for name, value in CORS_HEADERS]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    """The client went away before its body was complete; nothing is forwarded or answered."""


CLIENT_CLOSED = 499  # nginx's code for it, used only as a metric label


@dataclass
class _Outcome:
    """What the metrics record about one request."""

    request_type: str = "unknown"
    subnet: str = NO_SUBNET


def host_allowed(host: str, hostname: str, local_ip: str | None) -> bool:
    """Whether a Host header names this node: its domain, or the IP it was reached on."""
    host = host.strip().lower()
    if host.startswith("["):
        literal = host[1:].partition("]")[0]
    else:
        name, sep, port = host.rpartition(":")
        literal = name if sep and port.isdigit() and ":" not in name else host
    if literal.rstrip(".") == hostname:
        return True
    if local_ip is None:
        return False
    try:
        wanted, actual = ipaddress.ip_address(literal), ipaddress.ip_address(local_ip)
    except ValueError:
        return False
    # A dual-stack [::] listener sees IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(actual, ipaddress.IPv6Address) and actual.ipv4_mapped is not None:
        actual = actual.ipv4_mapped
    return wanted == actual


def _text(status: int, message: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> UpstreamResponse:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *_CORS, *extra]
    return UpstreamResponse(status, headers, (message + "\n").encode())


class BoundaryApp:
    """The ASGI app on the API address."""

    def __init__(
        self,
        hostname: str,
        balancer: Balancer,
        client: aiohttp.ClientSession,
        metrics: BoundaryMetrics,
    ) -> None:
        self.hostname = hostname
        self.balancer = balancer
        self.client = client
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        outcome = _Outcome()
        try:
            response = await self._handle(scope, receive, outcome)
        except _Disconnected:
            self._observe(scope, outcome, CLIENT_CLOSED, started)
            return
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            response = _text(500, "internal error in ic-boundary")
        # Counted before sending, so a client that got its answer also sees it in the metrics.
        self._observe(scope, outcome, response.status, started)
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _observe(self, scope: Scope, outcome: _Outcome, status: int, started: float) -> None:
        elapsed = time.monotonic() - started
        self.metrics.observe(scope["method"], outcome.request_type, status, outcome.subnet, elapsed)

    async def _handle(self, scope: Scope, receive: Receive, outcome: _Outcome) -> UpstreamResponse:
        headers: Headers = list(scope["headers"])
        hosts = [value.decode("latin-1") for name, value in headers if name == b"host"]
        if not hosts:
            return _text(400, "Missing Authority")
        local_ip = scope["server"][0] if scope.get("server") else None
        if not host_allowed(hosts[0], self.hostname, local_ip):
            return _text(400, f"Unknown Domain: {hosts[0]}")

        method, path = scope["method"], scope["path"]
        route = match_route(method, path)
        if isinstance(route, RouteMismatch):
            allow = [(b"allow", route.allow.encode())] if route.allow else []
            return _text(route.status, route.message, allow)
        outcome.request_type = route.request_type

        try:
            body = await _read_body(headers, receive)
        except _TooLarge:
            return _text(413, f"request body is larger than {MAX_BODY_BYTES} bytes")

        if route.target is Target.HEALTH:
            if self.balancer.healthy:
                return UpstreamResponse(204, list(_CORS), b"")
            return _text(503, "no healthy replica")

        try:
            subnet_id = self.balancer.subnet_of(route)
            outcome.subnet = subnet_id or NO_SUBNET
            candidates = self.balancer.candidates(subnet_id)
        except NoReplica as exc:
            return _text(exc.status, exc.message)

        query = scope.get("query_string", b"")
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else path
        if query:
            target += "?" + query.decode("latin-1")
        last: UpstreamResponse | UpstreamError | None = None
        for candidate_subnet, replica in candidates:
            outcome.subnet = candidate_subnet
            try:
                response = await forward(self.client, replica.url, method, target, headers, body)
            except UpstreamError as exc:
                self.metrics.upstream_errors.labels(candidate_subnet, exc.kind).inc()
                if not exc.failure.retryable:
                    log.warning("replica %s failed %s %s: %s", replica, method, path, exc)
                    return _text(exc.status, f"replica {replica.node_id} failed: {exc}")
                log.warning(
                    "replica %s failed %s %s, trying the next one: %s", replica, method, path, exc
                )
                if exc.failure is Failure.NOT_CONNECTED:
                    self.balancer.mark_unhealthy(replica)
                last = exc
            else:
                if not retryable_status(response.status):
                    return response
                log.warning(
                    "replica %s answered %s %s with %d, trying the next one",
                    replica,
                    method,
                    path,
                    response.status,
                )
                last = response
        if isinstance(last, UpstreamResponse):
            return last
        assert last is not None
        return _text(last.status, f"no replica reachable; last error: {last}")


async def _read_body(headers: Headers, receive: Receive) -> bytes:
    """The whole request body; raise `_TooLarge` beyond `MAX_BODY_BYTES`."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
