"""What ic-boundary needs to forward over aiohttp: a client session made for a
proxy, header values and URLs as aiohttp wants them, and the words for what went wrong.

A proxy's session adds no headers of its own (the client's are forwarded, or none; aiohttp adds
only ``Host`` and ``Content-Length``, for a POST without a body too, as a replica expects),
keeps no cookies (one client's ``Set-Cookie`` must not go out with another's requests),
decompresses nothing (the client gets the bytes the replica sent), takes no proxy from the
environment, and drops idle connections after 4 s, before a uvicorn replica's 5 s keep-alive
timeout closes them (reusing a connection the replica is closing fails the request). Callers
follow no redirects (``allow_redirects=False``).

Header values: aiohttp writes header text as UTF-8, so a value that is not UTF-8 (Latin-1
``obs-text``) goes out as the UTF-8 of its Latin-1 reading; every other value goes out as it
came.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import aiohttp
import yarl

from harness.node.tls import verify_for

_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
_URL_CACHE_SIZE = 1024


def proxy_session(
    timeout: aiohttp.ClientTimeout, urls: Iterable[str] = (), limit: int = 0
) -> aiohttp.ClientSession:
    """A session for a proxy that requests `urls` (a verifying TLS context only when one of them
    is https, see `harness.node.tls`), at most `limit` connections at once (0: no limit). Call
    it in the event loop that uses it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=4, ssl=verify_for(urls)),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=_NO_AUTO_HEADERS,
        timeout=timeout,
        trust_env=False,
    )


def header_text(value: bytes) -> str:
    """The text aiohttp writes back as `value` (see the module docstring)."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def outgoing_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """`headers` (raw names and values) as aiohttp takes them."""
    return [(name.decode("latin-1"), header_text(value)) for name, value in headers]


@functools.lru_cache(maxsize=_URL_CACHE_SIZE)
def url(text: str) -> yarl.URL:
    """The URL `text` (base URL, path and query), sent exactly as given: no re-quoting, no dot
    segments resolved. Cached: building a URL costs more than the rest of a request, and
    targets repeat."""
    return yarl.URL(text, encoded=True)


def parser_reason(exc: BaseException) -> str:
    """What aiohttp's HTTP parser said, on one line (its `message`, found on the error or on
    the parser error under it), else the error's own text."""
    cause: BaseException | None = exc
    while cause is not None:
        message = getattr(cause, "message", None)
        if isinstance(message, str) and message:
            return " ".join(message.split())
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
