"""The replica's public API (port 8080), a handler of `harness.node.http_server`: status,
canister/subnet rejects.

Checks run in the IC's order: route (404), method (405), body size (413), content type and
CBOR (400), health (503), then the reject of `rejects.py`. Every answer carries the IC's CORS
headers and waits out the `delay_seconds` fault first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time

import cbor2

from harness.node.http_server import (
    Answer,
    BadTarget,
    BodyTooLarge,
    ClientGone,
    Handler,
    Request,
    split_target,
)
from harness.node.replica.rejects import Reply, not_found, reject
from harness.node.replica.runtime import Runtime
from harness.node.status import (
    CONTENT_TYPE_CBOR,
    CORS_HEADERS,
    STATUS_PATH,
    ReplicaHealthStatus,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
# An oversized body is refused as soon as it is known to be too large; the server reads and
# drops the rest (up to its LINGER_BYTES) so the client gets to read the 413.

_ROUTE = re.compile(r"/api/(v[0-9]+)/(canister|subnet)/([^/]+)/([a-z_]+)")
ROUTES = frozenset(
    {
        ("v2", "canister", "query"),
        ("v2", "canister", "call"),
        ("v2", "canister", "read_state"),
        ("v2", "subnet", "read_state"),
        ("v3", "canister", "query"),
        ("v3", "canister", "call"),
        ("v3", "canister", "read_state"),
        ("v3", "subnet", "read_state"),
        ("v3", "subnet", "query"),
        ("v4", "canister", "call"),
        ("v4", "subnet", "call"),
    }
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


_CORS: tuple[tuple[bytes, bytes], ...] = tuple(
    (name.encode(), value.encode()) for name, value in CORS_HEADERS
)


def bad_request(reason: str) -> Answer:
    """The answer to a request the HTTP parser refuses, saying why."""
    return _answer(Reply.text(400, f"Bad Request: {reason}"))


def api_handler(runtime: Runtime) -> Handler:
    """The public API (`harness.node.http_server`), reading health and faults from `runtime`."""

    async def handle(request: Request) -> Answer | None:
        started = time.perf_counter()
        try:
            route, reply = await _handle(runtime, request)
        except ClientGone:
            return None
        delay = runtime.refresh().delay_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        method = request.method if request.method in _METHODS else "other"
        runtime.metrics.record_request(route, method, reply.status, time.perf_counter() - started)
        return _answer(reply)

    return handle


async def _handle(runtime: Runtime, request: Request) -> tuple[str, Reply]:
    """Return the metrics route label and the reply for one request."""
    try:
        path = split_target(request.target)[2]
    except BadTarget as exc:
        return "other", Reply.text(400, f"Bad Request: {exc}")
    method = request.method
    if path == STATUS_PATH:
        if method not in ("GET", "HEAD"):
            return "status", _method_not_allowed(method, path, "GET, HEAD")
        return "status", Reply(200, runtime.encoded_status(), CONTENT_TYPE_CBOR)
    match = _ROUTE.fullmatch(path)
    if match is None or (match[1], match[2], match[4]) not in ROUTES:
        return "other", Reply.text(404, f"not found: {path}")
    version, target, target_id, action = match.groups()
    route = f"/api/{version}/{target}/{{id}}/{action}"
    if method != "POST":
        return route, _method_not_allowed(method, path, "POST")
    try:
        body = await request.read_body()
    except BodyTooLarge:
        return route, Reply.text(
            413, f"request body is larger than the limit of {MAX_BODY_BYTES} bytes (5 MiB)"
        )
    content_type = _header(request, b"content-type")
    if content_type is None or content_type.strip().lower() != CONTENT_TYPE_CBOR:
        return route, Reply.text(
            400,
            f"Unexpected content-type {content_type or '(none)'}, expected {CONTENT_TYPE_CBOR}.",
        )
    try:
        cbor2.loads(body)
    except (ValueError, TypeError, OverflowError, RecursionError, cbor2.CBORDecodeError) as exc:
        return route, Reply.text(
            400, f"Failed to deserialize cbor request: body is not valid CBOR ({exc})"
        )
    runtime.refresh()
    state = runtime.health.state
    if state != ReplicaHealthStatus.HEALTHY:
        return route, Reply.text(503, f"replica is not healthy yet: {state}")
    return route, _rejected(version, action, target, target_id)


@functools.lru_cache(maxsize=1024)
def _rejected(version: str, action: str, target: str, target_id: str) -> Reply:
    """The reject of a request to a canister or subnet this replica does not host: the same
    bytes every time, so encoded once (per id, for the ids asked for most recently)."""
    return reject(version, action, not_found(target, target_id))


def _method_not_allowed(method: str, path: str, allowed: str) -> Reply:
    return Reply.text(
        405, f"method {method} not allowed on {path}; use {allowed}", ("allow", allowed)
    )


def _header(request: Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _answer(reply: Reply) -> Answer:
    body = reply.body
    return Answer(
        reply.status,
        [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", b"%d" % len(body)),
            *_CORS,
            *((name.encode(), value.encode()) for name, value in reply.headers),
        ],
        body,
    )
