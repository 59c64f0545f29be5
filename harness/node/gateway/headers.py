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

from harness.node.status import CONTENT_TYPE_CBOR

Header = tuple[bytes, bytes]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_TO_UPSTREAM = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_NOT_TO_CLIENT = HOP_BY_HOP | {b"content-length", b"date"}
_SUCCESS_HEADERS: tuple[Header, ...] = (
    (b"content-type", CONTENT_TYPE_CBOR.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
_NOT_TO_CLIENT_ON_SUCCESS = _NOT_TO_CLIENT | {name for name, _ in _SUCCESS_HEADERS}


def _named_by_connection(headers: Iterable[Header], dropped: frozenset[bytes]) -> frozenset[bytes]:
    """`dropped` plus the header names listed in any Connection header."""
    extra: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            extra.update(token.strip().lower() for token in value.split(b","))
    return dropped | extra if extra - dropped else dropped


def to_upstream(
    headers: list[Header], client_ip: str | None, scheme: str, host: bytes
) -> list[Header]:
    """The headers to send to the replica for a request that came with `headers`.

    Names in `headers` must be lowercase, as ASGI servers give them.
    """
    dropped = _named_by_connection(headers, _NOT_TO_UPSTREAM)
    kept = [header for header in headers if header[0] not in dropped]
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
    headers = list(headers)
    dropped = _named_by_connection(
        headers, _NOT_TO_CLIENT_ON_SUCCESS if success else _NOT_TO_CLIENT
    )
    kept = [header for header in headers if header[0] not in dropped]
    if success:
        kept.extend(_SUCCESS_HEADERS)
    return kept
