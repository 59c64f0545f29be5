"""`harness.node.http_server` over real loopback sockets: pipelined requests answered in order,
keep-alive as HTTP/1.0 and 1.1 clients ask, bodies over the limit refused (declared or chunked),
heads the parser refuses answered 400, a client leaving mid-body, the idle sweep, a stop's grace
period, and answers that carry no body (HEAD, 204, 304).

Each test serves an `HttpServer` on 127.0.0.1 (port 0) inside `asyncio.run` and talks to it
with a raw non-blocking socket in the same loop, so what is asserted is what a client reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from harness.node import http_server
from harness.node.http_server import (
    Answer,
    BodyTooLarge,
    ClientGone,
    HttpServer,
    Request,
    plain_answer,
)
from harness.node.listen import ListenAddress
from harness.node.serve import bind

WAIT = 5.0
"""The longest any condition is waited for: only a failing test waits that long."""
HOST = b"host: test\r\n"


# The handler: what each target does.
@dataclass
class Handler:
    """Answers ``/echo`` with the method, target and body it read (`reading` is set as it starts
    to); ``/hold`` only once `release` is set (`holding` is set as it waits); ``/head`` with a
    plain ``hello``; ``/204`` and ``/304`` with a body that must not be sent; ``/unread`` with
    a 404 before reading the body; ``/raise`` by raising. Keeps the targets it was given, and
    what ``read_body`` raised."""

    seen: list[bytes] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: Request) -> Answer | None:
        self.seen.append(request.target)
        try:
            return await self._answer(request)
        except asyncio.CancelledError as exc:
            self.errors.append(exc)
            raise
        finally:
            self.finished.set()

    async def _answer(self, request: Request) -> Answer | None:
        if request.target == b"/hold":
            self.holding.set()
            await self.release.wait()
            return plain_answer(200, "held")
        if request.target == b"/head":
            return plain_answer(200, "hello")
        if request.target in (b"/204", b"/304"):
            return Answer(int(request.target[1:]), [], b"not to be sent")
        if request.target == b"/unread":
            return plain_answer(404, "answered without reading the body")
        if request.target == b"/raise":
            raise RuntimeError("a bug in the handler")
        self.reading.set()
        try:
            body = await request.read_body()
        except BodyTooLarge as exc:
            self.errors.append(exc)
            return plain_answer(413, str(exc))
        except ClientGone as exc:
            self.errors.append(exc)
            return None
        text = b"%s %s %s" % (request.method.encode(), request.target, body)
        return Answer(200, [(b"content-length", b"%d" % len(text))], text)


def refuse(reason: str) -> Answer:
    return plain_answer(400, reason)


@dataclass
class Served:
    port: int
    server: HttpServer
    stopped: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, max_body: int = 1024, idle_timeout: float = 5.0, grace: float = 5.0
) -> AsyncIterator[Served]:
    """`handler` served on a loopback port until the end of the block (or an earlier stop)."""
    sock = bind(ListenAddress("127.0.0.1", 0), "test")
    server = HttpServer(handler, refuse, max_body, idle_timeout)
    stopped = asyncio.Event()
    task = asyncio.create_task(server.serve(sock, stopped, grace))
    try:
        yield Served(sock.getsockname()[1], server, stopped, task)
    finally:
        stopped.set()
        async with asyncio.timeout(WAIT + grace):
            await task


# The client: a raw socket, and what it reads.
@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, self.headers
        return values[0] if values else None

    @property
    def closes(self) -> bool:
        return self.header(b"connection") == b"close"


class Client:
    """One connection to the server, read as the kernel gives it (data, then EOF or reset)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, port: int) -> Client:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def _more(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.loop.sock_recv(self.sock, 65536)

    async def reply(self, head_only: bool = False) -> Reply:
        """The next answer; its body as long as its content-length says (none for a HEAD,
        a 1xx, 204 or 304)."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self._more()
            assert data, f"closed before a whole answer: {self.buffer!r}"
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        version, status, _ = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1", status_line
        headers = []
        for line in lines:
            name, _, value = line.partition(b":")
            headers.append((name.lower(), value.strip()))
        reply = Reply(int(status), headers, b"")
        length = reply.header(b"content-length")
        if head_only or reply.status in (204, 304) or reply.status < 200:
            return reply
        assert length is not None, head
        while len(self.buffer) < int(length):
            data = await self._more()
            assert data, f"closed half-way through a body: {self.buffer!r}"
            self.buffer += data
        reply.body, self.buffer = self.buffer[: int(length)], self.buffer[int(length) :]
        return reply

    async def closed(self) -> bytes:
        """Wait until the server closes the connection (EOF or reset); what came before it
        and was not read as an answer."""
        rest, self.buffer = self.buffer, b""
        while True:
            try:
                data = await self._more()
            except ConnectionResetError:
                return rest
            if not data:
                return rest
            rest += data

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[Client]:
    client = await Client.connect(port)
    try:
        yield client
    finally:
        client.close()


async def waited(event: asyncio.Event) -> None:
    async with asyncio.timeout(WAIT):
        await event.wait()


def request(
    method: bytes, target: bytes, body: bytes = b"", extra: bytes = b"", version: bytes = b"1.1"
) -> bytes:
    length = b"content-length: %d\r\n" % len(body) if body or method == b"POST" else b""
    return b"%s %s HTTP/%s\r\n%s%s%s\r\n%s" % (method, target, version, HOST, extra, length, body)


# Pipelining and keep-alive.
def test_pipelined_requests_in_one_write_are_answered_in_order_each_once() -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler) as served, connected(served.port) as client:
            await client.send(
                request(b"POST", b"/echo?1", b"one")
                + request(b"GET", b"/echo?2")
                + request(b"POST", b"/echo?3", b"three", extra=b"connection: close\r\n")
            )
            replies = [await client.reply() for _ in range(3)]
            assert [reply.body for reply in replies] == [
                b"POST /echo?1 one",
                b"GET /echo?2 ",
                b"POST /echo?3 three",
            ]
            assert [reply.closes for reply in replies] == [False, False, True]
            assert await client.closed() == b""  # nothing more: no answer twice
        assert handler.seen == [b"/echo?1", b"/echo?2", b"/echo?3"]

    asyncio.run(scenario())


def test_more_pipelined_requests_than_the_pipeline_depth_are_all_answered() -> None:
    async def scenario() -> None:
        handler = Handler()
        count = http_server.PIPELINE_DEPTH * 3
        async with serving(handler) as served, connected(served.port) as client:
            await client.send(b"".join(request(b"GET", b"/echo?%d" % i) for i in range(count)))
            bodies = [(await client.reply()).body for _ in range(count)]
            assert bodies == [b"GET /echo?%d " % i for i in range(count)]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("version", "extra", "kept"),
    [
        (b"1.0", b"", False),
        (b"1.0", b"connection: keep-alive\r\n", True),
        (b"1.1", b"connection: close\r\n", False),
        (b"1.1", b"", True),
    ],
    ids=["1.0", "1.0-keep-alive", "1.1-close", "1.1"],
)
def test_the_connection_is_kept_as_the_client_asks(
    version: bytes, extra: bytes, kept: bool
) -> None:
    async def scenario() -> None:
        async with serving(Handler()) as served, connected(served.port) as client:
            await client.send(request(b"GET", b"/echo", extra=extra, version=version))
            reply = await client.reply()
            assert (reply.status, reply.body) == (200, b"GET /echo ")
            assert reply.closes is not kept
            if kept:  # still open: a second request on it is answered
                await client.send(request(b"GET", b"/echo?again", version=version, extra=extra))
                assert (await client.reply()).body == b"GET /echo?again "
            else:
                assert await client.closed() == b""

    asyncio.run(scenario())


# Bodies.
def test_a_body_of_exactly_the_limit_is_read() -> None:
    async def scenario() -> None:
        async with serving(Handler(), max_body=10) as served, connected(served.port) as client:
            await client.send(request(b"POST", b"/echo", b"0123456789"))
            reply = await client.reply()
            assert (reply.status, reply.body, reply.closes) == (
                200,
                b"POST /echo 0123456789",
                False,
            )
            await client.send(request(b"GET", b"/echo?next"))
            assert (await client.reply()).body == b"GET /echo?next "

    asyncio.run(scenario())


CHUNKED = b"transfer-encoding: chunked\r\n"
AFTER = request(b"GET", b"/echo?after")
"""A request pipelined after a refused body: never read."""


@pytest.mark.parametrize(
    ("writes", "seen"),
    [
        ([request(b"POST", b"/echo", b"x" * 11) + AFTER], 11),
        ([request(b"POST", b"/echo", b"x" * 5000)[:-4997] + AFTER], 5000),
        (
            [
                b"POST /echo HTTP/1.1\r\n" + HOST + CHUNKED + b"\r\n",
                b"6\r\nabcdef\r\n",
                b"6\r\nghijkl\r\n0\r\n\r\n" + AFTER,
            ],
            12,
        ),
    ],
    ids=["declared", "declared-body-not-sent", "chunked"],
)
def test_a_body_over_the_limit_is_refused_then_the_connection_closes(
    writes: list[bytes], seen: int
) -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler, max_body=10) as served, connected(served.port) as client:
            # Chunked: the handler waits for the body; the chunks come in two more writes, the
            # last of them (over the limit) with everything after it, so no write can find the
            # connection already closed.
            for number, data in enumerate(writes):
                await client.send(data)
                if number == 0 and len(writes) > 1:
                    await waited(handler.reading)
            reply = await client.reply()
            assert reply.status == 413
            assert reply.closes
            assert await client.closed() == b""
        assert handler.seen == [b"/echo"]
        [error] = handler.errors
        assert isinstance(error, BodyTooLarge)
        assert (error.limit, error.seen) == (10, seen)

    asyncio.run(scenario())


def test_a_client_still_sending_a_large_body_over_the_limit_reads_the_answer() -> None:
    """More than the socket buffers hold: the server keeps reading (and dropping) it after its
    answer, so the client's sending ends without a reset and it reads the 413, then the end."""

    async def scenario() -> None:
        handler = Handler()
        size = 8 * 1024 * 1024
        async with serving(handler, max_body=10) as served, connected(served.port) as client:
            sending = asyncio.create_task(client.send(request(b"POST", b"/echo", b"x" * size)))
            reply = await client.reply()
            assert (reply.status, reply.closes) == (413, True)
            assert await client.closed() == b""
            async with asyncio.timeout(WAIT):
                await sending  # all of it sent: nothing was reset
        [error] = handler.errors
        assert isinstance(error, BodyTooLarge)
        assert (error.limit, error.seen) == (10, size)

    asyncio.run(scenario())


def test_a_large_body_answered_without_being_read_is_drained_so_the_client_reads_it() -> None:
    """A 404 given before the body is read (the body more than the socket buffers hold): the
    server reads and drops the rest after its answer, as after a 413."""

    async def scenario() -> None:
        handler = Handler()
        size = 8 * 1024 * 1024
        async with serving(handler, max_body=2 * size) as served, connected(served.port) as client:
            sending = asyncio.create_task(client.send(request(b"POST", b"/unread", b"x" * size)))
            reply = await client.reply()
            assert (reply.status, reply.closes) == (404, True)
            assert await client.closed() == b""
            async with asyncio.timeout(WAIT):
                await sending  # all of it sent: nothing was reset

    asyncio.run(scenario())


def test_a_handler_that_raises_gets_its_client_a_500_and_the_connection_closes() -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler) as served, connected(served.port) as client:
            await client.send(request(b"GET", b"/raise"))
            reply = await client.reply()
            assert (reply.status, reply.closes) == (500, True)
            assert b"internal error" in reply.body
            assert await client.closed() == b""

    asyncio.run(scenario())


def test_a_client_leaving_mid_body_makes_read_body_raise_client_gone() -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler) as served:
            async with connected(served.port) as client:
                await client.send(request(b"POST", b"/echo", b"0123456789")[:-7])
                await waited(handler.reading)
            await waited(handler.finished)
        [error] = handler.errors
        assert isinstance(error, ClientGone)

    asyncio.run(scenario())


# Heads the parser refuses.
@pytest.mark.parametrize(
    "bad",
    [b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n", b"BR\x00KEN\r\n\r\n"],
)
def test_a_head_the_parser_refuses_is_answered_400_then_the_connection_closes(
    bad: bytes,
) -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler) as served, connected(served.port) as client:
            await client.send(bad + request(b"GET", b"/echo?after"))
            reply = await client.reply()
            assert reply.status == 400
            assert reply.body.startswith(b"Invalid"), reply.body  # the parser's reason
            assert reply.closes
            assert await client.closed() == b""
        assert handler.seen == []

    asyncio.run(scenario())


def test_a_head_refused_on_a_connection_already_used_is_answered_400() -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler) as served, connected(served.port) as client:
            await client.send(request(b"GET", b"/echo"))
            assert (await client.reply()).closes is False
            await client.send(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            reply = await client.reply()
            assert (reply.status, reply.closes) == (400, True)
            assert await client.closed() == b""
        assert handler.seen == [b"/echo"]

    asyncio.run(scenario())


def test_a_good_request_pipelined_before_a_refused_head_is_answered_first() -> None:
    async def scenario() -> None:
        handler = Handler()
        async with serving(handler) as served, connected(served.port) as client:
            await client.send(request(b"GET", b"/hold") + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            await waited(handler.holding)
            handler.release.set()
            first = await client.reply()
            assert (first.status, first.body, first.closes) == (200, b"held\n", False)
            second = await client.reply()
            assert (second.status, second.closes) == (400, True)
            assert await client.closed() == b""
        assert handler.seen == [b"/hold"]

    asyncio.run(scenario())


# Idle connections.
def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_server, "SWEEP_INTERVAL", 0.02)
    idle_timeout = 0.3

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handler = Handler()
        async with serving(handler, idle_timeout=idle_timeout) as served:
            opened = loop.time()  # the connection is idle from after this only
            client = await Client.connect(served.port)
            await client.send(request(b"GET", b"/echo"))
            assert not (await client.reply()).closes
            assert await client.closed() == b""
            assert loop.time() - opened >= idle_timeout
            client.close()

    asyncio.run(scenario())


def test_a_connection_with_a_request_in_flight_is_not_swept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_server, "SWEEP_INTERVAL", 0.02)

    async def scenario() -> None:
        handler = Handler()
        async with serving(handler, idle_timeout=0.2) as served, connected(served.port) as busy:
            await busy.send(request(b"GET", b"/hold"))
            await waited(handler.holding)
            # A witness, idle since after the busy one's last byte: once the sweep closes it,
            # the busy connection has been past its idle timeout in a sweep too.
            async with connected(served.port) as witness:
                assert await witness.closed() == b""
            handler.release.set()
            reply = await busy.reply()
            assert (reply.status, reply.body, reply.closes) == (200, b"held\n", False)

    asyncio.run(scenario())


# Stopping.
def test_a_stop_closes_idle_connections_at_once_and_lets_requests_in_flight_finish() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handler = Handler()
        grace = 5.0
        async with (
            serving(handler, grace=grace) as served,
            connected(served.port) as idle,
            connected(served.port) as busy,
        ):
            await idle.send(request(b"GET", b"/echo"))
            assert (await idle.reply()).status == 200
            await busy.send(request(b"GET", b"/hold"))
            await waited(handler.holding)
            stopped_at = loop.time()
            served.stopped.set()
            assert await idle.closed() == b""
            assert loop.time() - stopped_at < grace / 2  # not at the end of the grace period
            assert not served.task.done()  # still draining: the busy connection is open
            handler.release.set()
            reply = await busy.reply()
            assert (reply.status, reply.body) == (200, b"held\n")
            assert reply.closes
            assert await busy.closed() == b""
            async with asyncio.timeout(WAIT):
                await served.task
        assert handler.errors == []

    asyncio.run(scenario())


def test_a_request_still_in_flight_past_the_grace_period_is_cut_off() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handler = Handler()
        grace = 0.3
        async with serving(handler, grace=grace) as served, connected(served.port) as busy:
            await busy.send(request(b"GET", b"/hold"))
            await waited(handler.holding)
            stopped_at = loop.time()
            served.stopped.set()
            assert await busy.closed() == b""  # no answer
            assert loop.time() - stopped_at >= grace
            async with asyncio.timeout(WAIT):
                await served.task
            await waited(handler.finished)
        [error] = handler.errors
        assert isinstance(error, asyncio.CancelledError)

    asyncio.run(scenario())


# Answers without a body.
def test_head_204_and_304_answers_carry_no_body() -> None:
    async def scenario() -> None:
        async with serving(Handler()) as served, connected(served.port) as client:
            await client.send(
                request(b"HEAD", b"/head")
                + request(b"GET", b"/204")
                + request(b"GET", b"/304")
                + request(b"GET", b"/echo", extra=b"connection: close\r\n")
            )
            head = await client.reply(head_only=True)
            assert (head.status, head.header(b"content-length")) == (200, b"6")
            # Each next answer starts right after the previous head: no body came in between.
            assert (await client.reply()).status == 204
            assert (await client.reply()).status == 304
            last = await client.reply()
            assert (last.status, last.body) == (200, b"GET /echo ")
            assert await client.closed() == b""

    asyncio.run(scenario())
