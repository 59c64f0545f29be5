"""TLS for the node programs' HTTP clients, only where a URL asks for it.

Building a verifying context loads the CA bundle into OpenSSL: about 8 MB of private memory in
every process that does (and 30 ms), while a testnet's programs talk plain HTTP to each other.
And httpx builds a context for every transport it is not given one: with `verify=False` too
(about 50 KB of OpenSSL state each, 1.7 MB for a gateway's 32 pools). So every client gets its
context from here: a verifying one only for https, else one bare context the process shares.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable

import httpx


def verify_for(urls: Iterable[str]) -> ssl.SSLContext:
    """What to give httpx's `verify=` for a client that requests `urls`: a verifying context
    when one of them is https, else the process's context that verifies nothing (nothing to
    verify over plain HTTP)."""
    if any(url.lower().startswith("https:") for url in urls):
        return httpx.create_ssl_context(trust_env=False)
    return _plain()


@functools.cache
def _plain() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
