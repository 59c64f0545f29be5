"""The routes ic-gateway serves (as `src/routing/mod.rs` of the real one), as a table built once.

Proxied to the replica, path and query unchanged:

- ``GET|HEAD /api/v2/status``
- ``POST /api/v2/canister/{principal}/query|call|read_state``
- ``POST /api/v2/subnet/{principal}/read_state``
- ``POST /api/v3/canister/{principal}/query|call|read_state``
- ``POST /api/v3/subnet/{principal}/read_state|query``
- ``POST /api/v4/canister/{principal}/call``, ``POST /api/v4/subnet/{principal}/call``

Answered by the gateway: ``GET|HEAD /health``, and ``OPTIONS`` (CORS preflight) on every
proxied route. The principal is not checked here (any segment but empty, `.` and `..`); the
replica judges it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Target(enum.Enum):
    REPLICA = "replica"
    HEALTH = "health"


@dataclass(frozen=True, slots=True)
class Route:
    target: Target
    methods: frozenset[str]
    allow: bytes
    """The `Allow` header value for a 405 (OPTIONS included where preflight is answered)."""


def _route(target: Target, *methods: str) -> Route:
    allowed = [*methods, "OPTIONS"] if target is Target.REPLICA else list(methods)
    return Route(target, frozenset(methods), ", ".join(allowed).encode())


_STATUS = _route(Target.REPLICA, "GET", "HEAD")
_HEALTH = _route(Target.HEALTH, "GET", "HEAD")
_POST = _route(Target.REPLICA, "POST")

_FIXED: dict[str, Route] = {"/api/v2/status": _STATUS, "/health": _HEALTH}

# (version, kind, endpoint) of /api/{version}/{kind}/{principal}/{endpoint}
_TEMPLATED: dict[tuple[str, str, str], Route] = {
    ("v2", "canister", "query"): _POST,
    ("v2", "canister", "call"): _POST,
    ("v2", "canister", "read_state"): _POST,
    ("v2", "subnet", "read_state"): _POST,
    ("v3", "canister", "query"): _POST,
    ("v3", "canister", "call"): _POST,
    ("v3", "canister", "read_state"): _POST,
    ("v3", "subnet", "read_state"): _POST,
    ("v3", "subnet", "query"): _POST,
    ("v4", "canister", "call"): _POST,
    ("v4", "subnet", "call"): _POST,
}


_NOT_A_PRINCIPAL = frozenset({"", ".", ".."})


def match_route(path: str) -> Route | None:
    """The route serving `path` (decoded, without query), or None for an unknown path."""
    route = _FIXED.get(path)
    if route is not None or not path.startswith("/api/v"):
        return route
    parts = path.split("/")
    # "", "api", version, kind, principal, endpoint. A dot segment is no principal: a client
    # (httpx among them) would resolve it and the replica would get another path than this.
    if len(parts) != 6 or parts[4] in _NOT_A_PRINCIPAL:
        return None
    return _TEMPLATED.get((parts[2], parts[3], parts[5]))
