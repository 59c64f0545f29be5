"""TLS for the node programs' HTTP clients (`harness.node.upstream_pool`, http.client) and the
driver's (httpx), only where a URL asks for it.

A testnet's programs talk plain HTTP to each other, and a verifying context costs: building
one loads the system's CA certificates into OpenSSL (its default paths, which ``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` may redirect), about 2 MB of memory and 20 ms in the process that does.
So every client gets its context from here: the process's one verifying context when a URL is
https, else the process's one bare context, which a client of plain-HTTP URLs never uses.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable


def verify_for(urls: Iterable[str]) -> ssl.SSLContext:
    """The TLS context for a client that requests `urls` (asyncio's ``ssl=``, http.client's
    ``context=``): the process's verifying one when one of them is https, else the process's
    context that verifies nothing (nothing to verify over plain HTTP). Both are shared: do not
    change them."""
    if any(url.lower().startswith("https:") for url in urls):
        return _verifying()
    return _plain()


def plain_http() -> ssl.SSLContext:
    """The context for a client that only ever requests http:// URLs (httpx's ``verify=``):
    the process's one that verifies nothing, shared. A client given none builds a verifying
    one, which it never uses over plain HTTP."""
    return _plain()


@functools.cache
def _verifying() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.cache
def _plain() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
