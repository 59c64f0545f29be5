"""ic-boundary's API, a handler of `harness.node.http_server`: check the Host, match the route,
forward to a replica.

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

from harness.node.boundary.metrics import NO_SUBNET, BoundaryMetrics
from harness.node.boundary.routing import Balancer, NoReplica, RouteMismatch, Target, match_route
from harness.node.boundary.upstream import (
    Headers,
    Pools,
    UpstreamError,
    UpstreamResponse,
    forward,
)
from harness.node.http_server import (
    Answer,
    BadTarget,
    BodyTooLarge,
    ClientGone,
    Request,
    split_target,
)
from harness.node.retry import Failure, retryable_status
from harness.node.status import CORS_HEADERS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
_CORS = [(name.encode(), value.encode()) for name, value in CORS_HEADERS]


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


def bad_request(reason: str) -> Answer:
    """The answer to a request the HTTP parser refuses, saying why."""
    return _answer(_text(400, f"Bad Request: {reason}"))


def _answer(response: UpstreamResponse) -> Answer:
    body = response.body
    if response.status in (204, 304):  # no body, and so no Content-Length (RFC 9110 §8.6)
        return Answer(response.status, response.headers, body)
    return Answer(
        response.status, [*response.headers, (b"content-length", b"%d" % len(body))], body
    )


class Boundary:
    """The handler of the API address (`harness.node.http_server`)."""

    def __init__(
        self,
        hostname: str,
        balancer: Balancer,
        client: Pools,
        metrics: BoundaryMetrics,
    ) -> None:
        self.hostname = hostname
        self.balancer = balancer
        self.client = client
        self.metrics = metrics

    async def __call__(self, request: Request) -> Answer | None:
        started = time.monotonic()
        outcome = _Outcome()
        try:
            response = await self._handle(request, outcome)
        except ClientGone:
            self._observe(request, outcome, CLIENT_CLOSED, started)
            return None
        except Exception:
            log.exception("unexpected error serving %s %r", request.method, request.target)
            response = _text(500, "internal error in ic-boundary")
        # Counted before sending, so a client that got its answer also sees it in the metrics.
        self._observe(request, outcome, response.status, started)
        return _answer(response)

    def _observe(self, request: Request, outcome: _Outcome, status: int, started: float) -> None:
        elapsed = time.monotonic() - started
        self.metrics.observe(request.method, outcome.request_type, status, outcome.subnet, elapsed)

    async def _handle(self, request: Request, outcome: _Outcome) -> UpstreamResponse:
        headers: Headers = request.headers
        hosts = [value.decode("latin-1") for name, value in headers if name == b"host"]
        if not hosts:
            return _text(400, "Missing Authority")
        if not host_allowed(hosts[0], self.hostname, request.local):
            return _text(400, f"Unknown Domain: {hosts[0]}")

        try:
            raw_path, query, path = split_target(request.target)
        except BadTarget as exc:
            return _text(400, f"Bad Request: {exc}")
        method = request.method
        route = match_route(method, path)
        if isinstance(route, RouteMismatch):
            allow = [(b"allow", route.allow.encode())] if route.allow else []
            return _text(route.status, route.message, allow)
        outcome.request_type = route.request_type

        try:
            body = await request.read_body()
        except BodyTooLarge:
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

        target = (raw_path + b"?" + query if query else raw_path).decode("latin-1")
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
