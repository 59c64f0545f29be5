"""Hop-by-hop headers (RFC 9110 §7.6.1), as ic-gateway and ic-boundary drop them both ways.

One definition of the hop-by-hop set (``Connection``, ``Keep-Alive``, ``Proxy-*``, ``TE``,
``Trailer``, ``Transfer-Encoding``, ``Upgrade``) and of the filter that removes those headers,
the ones a ``Connection`` header names, and any others a proxy drops in one direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


class HeaderFilter:
    """Drops the hop-by-hop headers, those named by ``Connection``, and `also`.

    Header names must be lowercase (as ASGI servers give them); the set of names to drop is
    built once, so a filter is meant to be made once per direction and called per message.
    """

    def __init__(self, also: Iterable[bytes] = ()) -> None:
        self.dropped = HOP_BY_HOP | frozenset(also)

    def __call__(self, headers: Sequence[Header]) -> list[Header]:
        dropped = self.dropped
        named: set[bytes] = set()
        for name, value in headers:
            if name == b"connection":
                named.update(token.strip().lower() for token in value.split(b","))
        if named - dropped:
            dropped = dropped | named
        return [header for header in headers if header[0] not in dropped]
