"""uvicorn's httptools protocol, changed so requests that treat the gateway as a forward proxy
reach the app marked instead of being served or failing with a bare "Invalid HTTP request",
and so each answer leaves in one write (`CoalescingTransport`).

ASGI keeps only the path of the request target: `GET http://elsewhere/api/v2/status` looks like
`GET /api/v2/status`, and `CONNECT host:443` or `GET http://host` (no path) fail in the URL
parser. This protocol puts any target that is not origin-form (`/...`, or `*`) into the scope as
the ASGI extension `scope["extensions"][PROXY_TARGET] = {"target": ...}` and lets the request
through with the path `/`, so the app can refuse it with a clear answer (`errors.NotAProxy`).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from harness.node.coalesce import CoalescingTransport

PROXY_TARGET = "ic_gateway.proxy_target"


class GatewayHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def on_headers_complete(self) -> None:
        url = self.url
        if not url.startswith(b"/") and url != b"*":
            self.scope["extensions"] = {PROXY_TARGET: {"target": url.decode("latin-1")}}
            self.url = b"/"
        super().on_headers_complete()

    def _unsupported_upgrade_warning(self) -> None:
        # The parser takes CONNECT for a protocol upgrade; the app refuses it, nothing to warn of.
        if self.scope.get("method") != "CONNECT":
            super()._unsupported_upgrade_warning()
