"""The app that serves a program's Prometheus registry on its metrics address: as ASGI for the
programs served by uvicorn, as a handler for those on `harness.node.http_server`.

The replica, ic-gateway and ic-boundary each keep their metrics in their own registry; this one
app serves it in the Prometheus text format on the given paths and answers 404 (plain text,
naming the paths) anywhere else. Non-HTTP scopes (lifespan, websocket) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.exposition import choose_encoder

from harness.node.http_server import Answer, Handler, Request, plain_answer
from harness.node.serve import ASGIApp, Receive, Scope, Send


def registry_app(
    registry: CollectorRegistry,
    paths: Sequence[str] = ("/metrics",),
    before_scrape: Callable[[], object] | None = None,
) -> ASGIApp:
    """Serve `registry` on `paths`, calling `before_scrape` (if any) before each scrape."""
    exposition = make_asgi_app(registry)
    served = frozenset(paths)
    where = " and ".join(paths)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] not in served:
            body = f"not found: {scope['path']} (metrics are served on {where})\n".encode()
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if before_scrape is not None:
            before_scrape()
        await exposition(scope, receive, send)

    return app


def registry_handler(
    registry: CollectorRegistry,
    paths: Sequence[str] = ("/metrics",),
    before_scrape: Callable[[], object] | None = None,
) -> Handler:
    """`registry_app` for `harness.node.http_server`: the same answers, without ASGI. The
    exposition format is the one the scraper's ``Accept`` header asks for."""
    served = frozenset(path.encode() for path in paths)
    where = " and ".join(paths)

    async def handle(request: Request) -> Answer:
        path = request.target.partition(b"?")[0]
        if path not in served:
            return plain_answer(
                404, f"not found: {path.decode('latin-1')} (metrics are served on {where})"
            )
        if before_scrape is not None:
            before_scrape()
        accept = next((value for name, value in request.headers if name == b"accept"), b"")
        encoder, content_type = choose_encoder(accept.decode("latin-1"))
        body = encoder(registry)
        return Answer(
            200,
            [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))],
            body,
        )

    return handle
