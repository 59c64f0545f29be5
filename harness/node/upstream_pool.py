"""An HTTP/1.1 client at the protocol level for a proxy: keep-alive connections to one upstream
(a replica's base URL), httptools parsing the answers, a request written in one write.

A proxy forwards what its own parser already took apart, so a client library's work (URL
objects, header objects, request and response objects, a pool with its own locks and timers)
is all overhead: ic-gateway spent more CPU per request in aiohttp than in everything else it
did (bench/RESULTS.md). Here `UpstreamPool.request` takes the method, target, headers and body
as bytes and gives back the status, the headers (names lowercase) and the whole body.

- Connections are kept for reuse, the most recently used first; one idle longer than
  `idle_timeout` (4 s, below the replica's 5 s keep-alive) or closed by the upstream is
  dropped when it comes up, so no timer runs per connection. At most `max_idle` are kept.
- A request that is cancelled (its deadline) or fails closes its connection.
- What goes wrong is an `UpstreamFailure` with the `harness.node.retry.Failure` that says
  whether the request may be sent again, and words for the log and the client.
- The answer to HEAD has no body whatever its head says; the connection is not reused after it
  (the parser would wait for a body).
- TLS when the URL is https (`harness.node.tls`).
- Timeouts only if asked (`Timeouts`: ic-boundary's; ic-gateway bounds its requests itself):
  connecting; waiting for the answer, from the end of sending the request to its first byte
  and between two later ones; the whole request. The last two are kept by one sweep per pool
  while it has requests in flight, not a timer per request.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from harness.node.retry import Failure

Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class Timeouts:
    """How long a request may take, in seconds: to connect, between two bytes of the answer
    (and from the end of the request to its first), in all."""

    connect: float
    read: float
    total: float

    @property
    def sweep(self) -> float:
        """How often the requests in flight are looked at: how late a timeout may fire."""
        return min(0.05, self.read / 4, self.total / 4)


IDLE_TIMEOUT = 4.0
MAX_IDLE = 256
_SNIPPET = 60


class UpstreamFailure(Exception):
    """No usable answer: `failure` (whether it may be sent again) and `reason` (words)."""

    def __init__(self, failure: Failure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


class Answer:
    """An upstream's answer: status, headers as received (names lowercase), whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[Header], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def os_reason(exc: OSError) -> str:
    """The OS's words for an OS error ("Connection refused"); asyncio's texts for a failed
    connect name the address instead ("Connect call failed ('127.0.0.1', 8080)")."""

    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


class _Connection(asyncio.Protocol):
    """One connection to the upstream; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[Answer] | None = None
        self.head_only = False
        self.reusable = False
        self.timed = False  # its pool has timeouts: keep `read_from` and `started`
        self.started = 0.0
        self.read_from: float | None = None  # when the wait for the next byte began
        self._received = b""  # the first bytes of the answer, for words on a broken one
        self._got = 0
        self._headers: list[Header] = []
        self._body: list[bytes] = []
        self._length: int | None = None
        self._headers_done = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self._got == 0:
            if isinstance(exc, OSError):
                self._fail(Failure.CONNECTION_LOST, f"connection lost: {os_reason(exc)}")
            else:
                self._fail(Failure.UNANSWERED, "closed the connection unanswered")
        elif self._headers_done and self._length is None and not self._chunked():
            self._complete()  # an answer delimited by the end of the connection
        elif self._headers_done and self._length is not None:
            got = sum(len(part) for part in self._body)
            self._fail(
                Failure.BROKEN_ANSWER,
                f"broken answer: closed it half-way, after {got} of the {self._length} "
                "bytes its content-length header announced",
            )
        else:
            self._fail(
                Failure.BROKEN_ANSWER,
                f"broken answer: closed it half-way (it had sent {self._received!r})",
            )

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Nothing asked: an idle connection that the upstream writes to is not reusable.
            self.reusable = False
            self.close()
            return
        if self.timed:
            self.read_from = self.loop.time()
        if self._got < _SNIPPET:
            self._received += data[: _SNIPPET - self._got]
        self._got += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Failure.BROKEN_ANSWER, "broken answer: it switched protocols")
        except httptools.HttpParserError as exc:
            reason = " ".join(str(exc).split())
            self._fail(
                Failure.BROKEN_ANSWER,
                f"broken answer: {reason} (it had sent {self._received!r})",
            )

    # httptools callbacks
    def on_message_begin(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # More after the answer, in the same read: the connection is out of step.
            self.reusable = False
            self.close()
        self._headers = []
        self._body = []
        self._length = None
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name == b"content-length" and value.isdigit():
            self._length = int(value)

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self.head_only and not self._interim():
            self._complete(reuse=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self.head_only and not self._interim():
            self._complete(reuse=self.parser.should_keep_alive())

    # the exchange
    def _interim(self) -> bool:
        """Whether the message is an interim 1xx answer (100 Continue, 103 Early Hints): the
        final one follows (RFC 9110 §15.2)."""
        return 100 <= self.parser.get_status_code() < 200

    def _chunked(self) -> bool:
        return any(name == b"transfer-encoding" for name, _ in self._headers)

    def _complete(self, reuse: bool = False) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        body = self._body
        status = self.parser.get_status_code()
        self.reusable = reuse
        waiter.set_result(
            Answer(status, self._headers, body[0] if len(body) == 1 else b"".join(body))
        )

    def _fail(self, failure: Failure, reason: str) -> None:
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamFailure(failure, reason))
        self.close()

    def send(self, request: bytes, head_only: bool) -> asyncio.Future[Answer]:
        """Send `request` (whole, in one write); the answer comes in the future returned."""
        assert self.transport is not None
        self.head_only = head_only
        self.reusable = False
        self._received = b""
        self._got = 0
        waiter: asyncio.Future[Answer] = self.loop.create_future()
        self.waiter = waiter
        transport = self.transport
        transport.write(request)
        if self.timed:
            self.started = now = self.loop.time()
            self.read_from = now if transport.get_write_buffer_size() == 0 else None
        return waiter

    def check(self, now: float, timeouts: Timeouts) -> None:
        """Fail the request in flight if it is past one of `timeouts`."""
        if now - self.started > timeouts.total:
            self._fail(Failure.TIMED_OUT, f"no answer in time: not done in {timeouts.total:g} s")
            return
        if self.read_from is None:
            assert self.transport is not None
            if self.transport.get_write_buffer_size() == 0:
                self.read_from = now  # all sent: the wait for the answer begins
        elif now - self.read_from > timeouts.read:
            self._fail(
                Failure.TIMED_OUT, f"no answer in time: nothing received in {timeouts.read:g} s"
            )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to the upstream at `url` (``http://host:port``, or https)."""

    def __init__(
        self,
        url: str,
        tls: ssl.SSLContext | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_idle: int = MAX_IDLE,
        timeouts: Timeouts | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in the upstream URL {url!r}")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if parts.port is None else f"{host}:{parts.port}"
        self.host_header = b"host: " + authority.encode("idna") + b"\r\n"
        self.tls = tls if self.https else None
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.timeouts = timeouts
        self._idle: collections.deque[_Connection] = collections.deque()
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def request(
        self, method: bytes, target: bytes, headers: list[Header], body: bytes
    ) -> Answer:
        """Send one request and return the whole answer; `UpstreamFailure` if there is none.
        `headers` go out as given, after ``Host`` and before ``Content-Length`` (sent when
        there is a body, or for POST, PUT and PATCH)."""
        parts = [method, b" ", target, b" HTTP/1.1\r\n", self.host_header]
        parts.extend([b"%s: %s\r\n" % header for header in headers])
        if body or method in (b"POST", b"PUT", b"PATCH"):
            parts.append(b"content-length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        if body:
            parts.append(body)
        connection = self._idle_connection() or await self._connect()
        timed = self.timeouts is not None
        if timed:
            self._busy.add(connection)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            answer = await connection.send(b"".join(parts), method == b"HEAD")
        except BaseException:
            # Failed, or cancelled (maybe just as the answer came): never used again.
            connection.reusable = False
            connection.close()
            raise
        finally:
            connection.waiter = None
            if timed:
                self._busy.discard(connection)
        if connection.reusable and len(self._idle) < self.max_idle:
            connection.idle_since = connection.loop.time()
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    def _idle_connection(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if connection.loop.time() - connection.idle_since > self.idle_timeout:
                connection.close()
                # Older ones are older still.
                while idle:
                    idle.popleft().close()
                return None
            return connection
        return None

    async def _sweep(self) -> None:
        timeouts = self.timeouts
        assert timeouts is not None
        loop = asyncio.get_running_loop()
        try:
            while self._busy:
                await asyncio.sleep(timeouts.sweep)
                now = loop.time()
                for connection in list(self._busy):
                    connection.check(now, timeouts)
        finally:
            self._sweeper = None

    async def _connect(self) -> _Connection:
        timeouts = self.timeouts
        if timeouts is None:
            return await self._open()
        try:
            async with asyncio.timeout(timeouts.connect):
                connection = await self._open()
        except TimeoutError:
            raise UpstreamFailure(
                Failure.NOT_CONNECTED, f"connect timeout: not connected in {timeouts.connect:g} s"
            ) from None
        connection.timed = True
        return connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(loop),
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls is not None else None,
            )
        except ssl.SSLError as exc:
            raise UpstreamFailure(Failure.NOT_CONNECTED, f"TLS: {exc}") from exc
        except OSError as exc:
            raise UpstreamFailure(Failure.NOT_CONNECTED, os_reason(exc)) from exc
        return connection

    def close(self) -> None:
        """Close the idle connections (those in use close when their exchange ends)."""
        while self._idle:
            self._idle.popleft().close()
        if self._sweeper is not None:
            self._sweeper.cancel()
