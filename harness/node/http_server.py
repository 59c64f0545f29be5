"""An HTTP/1.1 server at the protocol level: one asyncio protocol per connection, httptools
parsing the requests, each answer written whole in one `transport.write`.

ic-gateway, ic-boundary and the replica serve their API and metrics on it instead of an ASGI
server: an ASGI server builds a scope dict, message dicts and a task per request and writes an
answer in two sends, and the proxies then rebuilt every request for an HTTP client library.
Here the parser's callbacks fill one `Request`, and a handler (`Handler`) turns it into an
`Answer`.

What a connection does:

- A request is handed to the handler as soon as its head is parsed; its body follows
  (`Request.read_body`), counted as it arrives, so a body over the limit (declared or sent,
  chunked or slow) is refused (`BodyTooLarge`) without being kept.
- Requests are answered one at a time, in order; pipelined ones wait their turn, and past
  `PIPELINE_DEPTH` waiting the connection stops reading until the handler catches up.
- Keep-alive as the client asks (HTTP/1.1 by default, HTTP/1.0 with ``Connection:
  keep-alive``); an answer that leaves a request's body unread, an upgrade or CONNECT, or a head
  the parser refuses (answered 400 with the parser's reason) closes the connection after it.
- A body still coming after its answer (refused, or answered without being read: a 404, say)
  is read and dropped after the answer (up to
  `LINGER_BYTES`, `LINGER_SECONDS`, the idle timeout between reads), with the sending side
  already shut: closing with unread data would reset the connection, and the client would lose
  the answer (nginx's lingering close).
- A client that leaves: the request waiting for its body gets `ClientGone`; one being answered
  is answered into the void.
- Idle keep-alive connections are closed after `idle_timeout` by a sweep once a second over all
  connections (no timer per request); a stop (`HttpServer.stop`) closes the idle ones at once,
  lets requests in flight finish within the grace period, then closes the rest.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import formatdate
from typing import cast
from urllib.parse import unquote

import httptools

from harness.node.listen import ListenAddress

log = logging.getLogger(__name__)

Header = tuple[bytes, bytes]

LINGER_BYTES = 64 * 1024 * 1024
"""How much of a refused body is still read (and dropped) after the answer, at most."""
LINGER_SECONDS = 30.0
"""How long a connection lingers so, at most (nginx's ``lingering_time``)."""
PIPELINE_DEPTH = 8
"""Pipelined requests a connection keeps waiting before it stops reading."""
SWEEP_INTERVAL = 1.0
"""How often idle keep-alive connections are looked for, in seconds."""
_STOP_POLL = 0.01

_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_NO_BODY = frozenset({204, 304})
_CLOSE = (b"connection", b"close")


class BodyTooLarge(Exception):
    """The request's body is over the server's limit: `seen` bytes were declared or sent."""

    def __init__(self, limit: int, seen: int) -> None:
        super().__init__(f"body of {seen} bytes over the limit of {limit}")
        self.limit = limit
        self.seen = seen


class ClientGone(Exception):
    """The client closed the connection before its request's body was complete."""


class Request:
    """One request as parsed: method, target as sent, version, headers (names lowercase), the
    client's address and the one it came in on."""

    __slots__ = (
        "_body",
        "_error",
        "_limit",
        "_size",
        "_waiter",
        "client",
        "complete",
        "headers",
        "keep_alive",
        "local",
        "method",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        client: str | None,
        local: str | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers: list[Header] = []
        self.client = client
        self.local = local  # the address the request came in on
        self.keep_alive = True
        self.complete = False
        self._body: list[bytes] = []
        self._size = 0
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._limit = 0

    async def read_body(self) -> bytes:
        """The whole body; `BodyTooLarge` as soon as it is known to be over the limit,
        `ClientGone` if the client leaves before it is complete."""
        if not self.complete and self._error is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    @property
    def body_read(self) -> bool:
        """Whether the whole body has arrived (the connection may carry another request)."""
        return self.complete and self._error is None

    def _add(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._fail(BodyTooLarge(self._limit, self._size))
            self._body = []
            return
        self._body.append(data)

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._wake()

    def _done(self) -> None:
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Answer:
    """What the handler answers: status, headers (with their ``content-length`` where the
    answer has one) and the body to send (none for HEAD). `close`: the connection closes after
    it (its headers then say ``connection: close``)."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(
        self, status: int, headers: list[Header], body: bytes = b"", close: bool = False
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close


Handler = Callable[[Request], Awaitable["Answer | None"]]
"""Answers one request, or None when there is no one to answer (`ClientGone`); must not raise
(its own errors are its answers)."""
BadRequest = Callable[[str], Answer]
"""The answer to a head the parser refuses, given the parser's reason."""


def plain_answer(status: int, text: str, headers: tuple[Header, ...] = ()) -> Answer:
    """A ``text/plain`` answer saying `text`, with `headers`; ``connection: close`` among them
    closes the connection after it."""
    body = (text + "\n").encode()
    return Answer(
        status,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            *(header for header in headers if header != _CLOSE),
            (b"content-length", b"%d" % len(body)),
        ],
        body,
        close=_CLOSE in headers,
    )


class BadTarget(ValueError):
    """A request target that is no URL."""


def split_target(target: bytes) -> tuple[bytes, bytes | None, str]:
    """The raw path, the raw query (None when there is none) and the path decoded (``%xx``
    undone, as an ASGI server's ``path``) of a request target; `BadTarget` when it is none."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise BadTarget(f"invalid request target {target[:200]!r}") from None
    raw_path: bytes = url.path or b"/"
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    return raw_path, url.query or None, path


async def serve_until_signal(
    listeners: Sequence[tuple[HttpServer, socket.socket]],
    grace: float,
    stopped: asyncio.Event | None = None,
) -> None:
    """Serve every (server, bound socket) until SIGTERM or SIGINT (or `stopped` is set), then
    drain them all, each request in flight getting at most `grace` seconds."""
    if stopped is None:
        stopped = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        log.info("received %s: stopping, draining in-flight requests", sig.name)
        stopped.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop, sig)
    try:
        await asyncio.gather(*(server.serve(sock, stopped, grace) for server, sock in listeners))
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def bound_address(sock: socket.socket) -> ListenAddress:
    """The address `sock` really listens on (useful with port 0)."""
    host, port = sock.getsockname()[:2]
    return ListenAddress(host, port)


class _Clock:
    """The ``Date`` header, made again only when the second changes."""

    def __init__(self) -> None:
        self._second = 0
        self.header = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self.header = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.header


class _Connection(asyncio.Protocol):
    """One client connection: parse, hand requests over in order, write answers whole."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client: str | None = None
        self.local: str | None = None
        self.parsing: Request | None = None
        self.queue: collections.deque[Request] = collections.deque()
        self.worker: asyncio.Task[None] | None = None
        self.busy = False  # the handler has a request
        self._wakeup: asyncio.Future[None] | None = None
        self.closing = False
        self.paused = False
        self.paused_for_good = False
        self.refusal: Answer | None = None
        self.lingering = False
        self.linger_until = 0.0
        self._lingered = 0
        self.idle_since = self.loop.time()
        self._url = b""
        self._headers: list[Header] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else None
        here = transport.get_extra_info("sockname")
        self.local = here[0] if isinstance(here, tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        request = self.parsing
        if request is not None:
            self.parsing = None
            request._fail(ClientGone())
        for waiting in self.queue:
            if not waiting.complete:
                waiting._fail(ClientGone())
        self._wake()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._linger_on(len(data))
            return
        if self.closing or self.paused_for_good:
            return  # what follows an upgrade, a refused body or a bad head is not read
        self.idle_since = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT, or an Upgrade header: the request is queued; nothing after it is HTTP.
            self._stop_reading()
        except httptools.HttpParserError as exc:
            self._refuse(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        request = self.parsing = Request(
            parser.get_method().decode("latin-1"),
            self._url,
            parser.get_http_version(),
            self.client,
            self.local,
        )
        request.headers = self._headers
        request.keep_alive = parser.should_keep_alive()
        limit = request._limit = self.server.max_body
        self.queue.append(request)
        if self.worker is None:
            self.worker = self.loop.create_task(self._work())
        else:
            self._wake()
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                self._refuse_body(request, BodyTooLarge(limit, int(value)))
                break
        if len(self.queue) > PIPELINE_DEPTH:
            self._pause()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is not None and request._error is None:
            request._add(body)
            if request._error is not None:
                self._refuse_body(request, request._error)

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is not None:
            self.parsing = None
            request._done()

    def _refuse_body(self, request: Request, error: Exception) -> None:
        """`request`'s body will not be read: it fails with `error`, and as the rest of it is
        still on its way, nothing more is read on this connection."""
        request._fail(error)
        self.paused_for_good = True
        self._pause()

    # answering
    async def _work(self) -> None:
        """Answer the requests in order as they come, until the connection ends: one task for
        the connection's life, woken by each request, instead of one per request."""
        queue = self.queue
        try:
            while not self.closing:
                if not queue:
                    if self._ended():
                        break
                    waiter = self._wakeup = self.loop.create_future()
                    await waiter
                    continue
                request = queue[0]
                self.busy = True
                try:
                    answer = await self.server.handler(request)
                except Exception:
                    # A bug in the handler: its client gets a 500, and the connection ends.
                    log.exception("internal error answering %s %r", request.method, request.target)
                    answer = plain_answer(500, "internal error; the details are in the log")
                    answer.close = True
                self.busy = False
                queue.popleft()
                self.idle_since = self.loop.time()
                if answer is not None:
                    self._write(request, answer)
                if self.paused and len(queue) <= PIPELINE_DEPTH // 2:
                    self._resume()
        finally:
            self.busy = False
            self.worker = None
            self._wakeup = None

    def _ended(self) -> bool:
        """With every answer out: write the refusal owed, or close a connection nothing more
        is read from (an upgrade, a body left unread); whether the connection has ended."""
        if self.refusal is not None:
            self._write(Request("GET", b"", "1.1", self.client), self.refusal, last=True)
            return True
        if self.paused_for_good and not self.lingering:
            self.close()
            return True
        return False

    def _wake(self) -> None:
        """Wake the worker waiting for a request (or for the end)."""
        waiter = self._wakeup
        if waiter is not None:
            self._wakeup = None
            if not waiter.done():
                waiter.set_result(None)

    def _write(self, request: Request, answer: Answer, last: bool = False) -> None:
        """Send `answer` in one write; close the connection after it when it is the last."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            return
        last = (
            last
            or answer.close
            or not request.keep_alive
            or not request.body_read
            or self.server.stopping
            or (self.paused_for_good and not self.queue and self.refusal is None)
        )
        status = answer.status
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        parts.extend([b"%s: %s\r\n" % header for header in answer.headers])
        parts.append(self.server.clock.date())
        if last:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if answer.body and request.method != "HEAD" and status not in _NO_BODY:
            parts.append(answer.body)
        transport.write(b"".join(parts))
        if last:
            if request.complete:
                self.close()
            else:
                self._linger()  # its body is still coming: refused, or answered without it

    def _linger(self) -> None:
        """The answer to a refused body is out: shut the sending side and drop what the client
        still sends, until it is done (its end of the stream closes the connection) or it has
        sent or taken too much."""
        transport = self.transport
        assert transport is not None
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self.lingering = True
        self.parsing = None
        self.idle_since = self.loop.time()
        self.linger_until = self.idle_since + LINGER_SECONDS
        self.paused = False
        transport.resume_reading()

    def _linger_on(self, size: int) -> None:
        self._lingered += size
        self.idle_since = self.loop.time()
        if self._lingered > LINGER_BYTES or self.idle_since > self.linger_until:
            self.close()

    def _refuse(self, exc: httptools.HttpParserError) -> None:
        """A head (or chunk) the parser cannot take: the request it belongs to is dropped, and
        a 400 with the parser's reason follows the answers already owed; then the connection
        closes."""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        request = self.parsing
        self.parsing = None
        if request is not None:
            request._fail(ClientGone())
        self.paused_for_good = True
        self._pause()
        self.refusal = self.server.bad_request(reason)
        if self.worker is None:
            self._write(Request("GET", b"", "1.1", self.client), self.refusal, last=True)
        elif not self.busy:
            self._wake()

    def _stop_reading(self) -> None:
        """Nothing more is read: the connection closes after the answers already owed."""
        self.paused_for_good = True
        self._pause()
        if self.worker is None:
            self.closing = True
            assert self.transport is not None
            self.transport.close()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and not self.paused_for_good and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def expired(self, now: float, idle_before: float) -> bool:
        """Idle since before `idle_before`, or lingering past its time."""
        if self.lingering and now > self.linger_until:
            return True
        return self.idle and self.idle_since < idle_before

    @property
    def idle(self) -> bool:
        return not self.busy and self.parsing is None and not self.queue

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class HttpServer:
    """Serves `handler` on a bound socket until `stop()`; see the module's docstring."""

    def __init__(
        self,
        handler: Handler,
        bad_request: BadRequest,
        max_body: int,
        idle_timeout: float = 5.0,
    ) -> None:
        self.handler = handler
        self.bad_request = bad_request
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self.clock = _Clock()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop
        self._server: asyncio.Server | None = None

    async def serve(self, sock: socket.socket, stopped: asyncio.Event, grace: float) -> None:
        """Serve on `sock` until `stopped` is set, then drain for at most `grace` seconds."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), sock=sock, backlog=1024
        )
        sweeper = self.loop.create_task(self._sweep_idle())
        try:
            await stopped.wait()
        finally:
            sweeper.cancel()
            await self._drain(grace)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            cutoff = self.loop.time() - self.idle_timeout
            now = self.loop.time()
            for connection in list(self.connections):
                if connection.expired(now, cutoff):
                    connection.close()

    async def _drain(self, grace: float) -> None:
        """Stop accepting, close idle connections, give busy ones `grace` seconds."""
        self.stopping = True
        assert self._server is not None
        self._server.close()
        deadline = self.loop.time() + grace
        while True:
            for connection in list(self.connections):
                if connection.idle:
                    connection.close()
            if not self.connections:
                break
            if self.loop.time() >= deadline:
                log.error(
                    "closing %d connection(s) still busy after the %s s graceful timeout",
                    len(self.connections),
                    grace,
                )
                for connection in list(self.connections):
                    connection.close()
                    if connection.worker is not None:
                        connection.worker.cancel()
                break
            await asyncio.sleep(_STOP_POLL)
        await self._server.wait_closed()
