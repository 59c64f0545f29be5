"""Header rewriting of a reverse proxy, in both directions (RFC 9110 §7.6).

Towards the replica: hop-by-hop headers (``Connection`` and the headers it names,
``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) are
dropped, as are ``Host`` (the replica's own is sent), ``Content-Length`` (recomputed from the
buffered body) and ``Expect`` (the body is already read); ``X-Forwarded-For`` gets the client
address appended, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are replaced by what the
gateway saw.

Towards the client: the same hop-by-hop headers are dropped, as are ``Content-Length``
(recomputed) and ``Date`` (the server adds its own). Successful answers get the headers the
real gateway sets "for redundancy": ``Content-Type: application/cbor``,
``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY``.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.node.proxy_headers import Header, HeaderFilter
from harness.node.status import CONTENT_TYPE_CBOR

_TO_UPSTREAM = HeaderFilter(
    (
        b"host",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    )
)
_SUCCESS_HEADERS: tuple[Header, ...] = (
    (b"content-type", CONTENT_TYPE_CBOR.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
_TO_CLIENT = HeaderFilter((b"content-length", b"date"))
_TO_CLIENT_ON_SUCCESS = HeaderFilter(_TO_CLIENT.dropped | {name for name, _ in _SUCCESS_HEADERS})


def to_upstream(
    headers: list[Header], client_ip: str | None, scheme: str, host: bytes
) -> list[Header]:
    """The headers to send to the replica for a request that came with `headers`.

    Names in `headers` must be lowercase, as ASGI servers give them.
    """
    kept = _TO_UPSTREAM(headers)
    forwarded_for = b", ".join(value for name, value in headers if name == b"x-forwarded-for")
    if client_ip is not None:
        client = client_ip.encode()
        forwarded_for = forwarded_for + b", " + client if forwarded_for else client
    if forwarded_for:
        kept.append((b"x-forwarded-for", forwarded_for))
    kept.append((b"x-forwarded-proto", scheme.encode()))
    kept.append((b"x-forwarded-host", host))
    return kept


def to_client(headers: Iterable[Header], success: bool) -> list[Header]:
    """The headers to send back for a replica answer with `headers` (lowercase names)."""
    kept = (_TO_CLIENT_ON_SUCCESS if success else _TO_CLIENT)(list(headers))
    if success:
        kept.extend(_SUCCESS_HEADERS)
    return kept
