"""The replica's public API (port 8080) as a raw ASGI app: status, canister/subnet rejects.

Checks run in the IC's order: route (404), method (405), body size (413), content type and
CBOR (400), health (503), then the reject of `rejects.py`. Every answer carries the IC's CORS
headers and waits out the `delay_seconds` fault first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import cbor2

from harness.node.replica.rejects import Reply, not_found, reject
from harness.node.replica.runtime import Runtime
from harness.node.serve import ASGIApp, Receive, Scope, Send
from harness.node.status import (
    CONTENT_TYPE_CBOR,
    CORS_HEADERS,
    STATUS_PATH,
    ReplicaHealthStatus,
    encode_status,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
# An oversized body is read and dropped up to this much, so the client gets to read the 413;
# beyond it the connection is closed instead.
MAX_DRAIN_BYTES = 64 * 1024 * 1024

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


class _Disconnected(Exception):
    """The client went away before its body was read."""


def api_app(runtime: Runtime) -> ASGIApp:
    """The ASGI app of the public API, reading health and faults from `runtime`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        try:
            route, reply = await _handle(runtime, scope, receive)
        except _Disconnected:
            return
        delay = runtime.refresh().delay_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        await _send(send, reply)
        method = scope["method"] if scope["method"] in _METHODS else "other"
        runtime.metrics.record_request(route, method, reply.status, time.perf_counter() - started)

    return app


async def _handle(runtime: Runtime, scope: Scope, receive: Receive) -> tuple[str, Reply]:
    """Return the metrics route label and the reply for one request."""
    path: str = scope["path"]
    method: str = scope["method"]
    if path == STATUS_PATH:
        if method not in ("GET", "HEAD"):
            return "status", _method_not_allowed(method, path, "GET, HEAD")
        return "status", Reply(200, encode_status(runtime.status()), CONTENT_TYPE_CBOR)
    match = _ROUTE.fullmatch(path)
    if match is None or (match[1], match[2], match[4]) not in ROUTES:
        return "other", Reply.text(404, f"not found: {path}")
    version, target, target_id, action = match.groups()
    route = f"/api/{version}/{target}/{{id}}/{action}"
    if method != "POST":
        return route, _method_not_allowed(method, path, "POST")
    body = await _read_body(scope, receive)
    if body is None:
        return route, Reply.text(
            413, f"request body is larger than the limit of {MAX_BODY_BYTES} bytes (5 MiB)"
        )
    content_type = _header(scope, b"content-type")
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
    return route, reject(version, action, not_found(target, target_id))


def _method_not_allowed(method: str, path: str, allowed: str) -> Reply:
    return Reply.text(
        405, f"method {method} not allowed on {path}; use {allowed}", ("allow", allowed)
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The request body, or None if it is over `MAX_BODY_BYTES` (then drained, bounded)."""
    declared = _header(scope, b"content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        too_large = too_large or size > MAX_BODY_BYTES
        if not too_large:
            chunks.append(chunk)
        if not message.get("more_body", False) or size > MAX_DRAIN_BYTES:
            break
    return None if too_large else b"".join(chunks)


async def _send(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
        *((name.encode(), value.encode()) for name, value in (*CORS_HEADERS, *reply.headers)),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
