"""The handler (`harness.node.http_server`) that serves a program's Prometheus registry on its
metrics address.

The replica, ic-gateway and ic-boundary each keep their metrics in their own registry; this one
handler serves it on the given paths and answers 404 (plain text, naming the paths) anywhere
else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from harness.node.http_server import Answer, Handler, Request, plain_answer


def registry_handler(
    registry: CollectorRegistry,
    paths: Sequence[str] = ("/metrics",),
    before_scrape: Callable[[], object] | None = None,
) -> Handler:
    """Serve `registry` on `paths` (calling `before_scrape`, if any, before each scrape) and
    answer 404 (plain text, naming the paths) anywhere else. The exposition format is the one
    the scraper's ``Accept`` header asks for."""
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
