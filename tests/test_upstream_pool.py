"""`harness.node.upstream_pool` against real upstreams on loopback ports: connections reused
and dropped when too old, the `Failure` of each way an upstream fails (refused, unanswered, cut
short, garbage, reset), answers delimited by close or chunked, HEAD, a cancelled request's
connection, 1xx interim answers, and the request's bytes on the wire.

The upstreams are `raw_http.RawServer` (a thread, for the failures) and `Upstream` here (an
asyncio server in the test's own loop, that sees each connection open and close).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from raw_http import HANG_UP, RESET, Answer, RawServer

from harness.node import upstream_pool
from harness.node.retry import Failure
from harness.node.upstream_pool import UpstreamFailure, UpstreamPool

WAIT = 5.0
"""The longest any condition is waited for: only a failing test waits that long."""
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Peer:
    """One connection the upstream took: the requests it read, and whether it is closed."""

    writer: asyncio.StreamWriter
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


Reply = list[bytes] | None
"""What `Upstream` sends for a request: parts, each in its own write; None: nothing."""


class Upstream:
    """An HTTP/1.1 upstream on a loopback port in the test's loop that keeps connections
    open: each request (its head and the body its content-length announces) is answered with
    `answer(request)`. The connections it took are kept in order in `peers`."""

    def __init__(self, answer: Callable[[bytes], Reply]) -> None:
        self.answer = answer
        self.peers: list[Peer] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.peers:  # its task ends: no task is left for asyncio.run to cancel
            peer.writer.close()
            await waited(peer.closed)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(writer)
        self.peers.append(peer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                peer.requests.append(request)
                for part in self.answer(request) or ():
                    writer.write(part)
                    await writer.drain()
        finally:
            peer.closed.set()
            writer.close()


def always(*parts: bytes) -> Callable[[bytes], Reply]:
    return lambda request: list(parts)


async def waited(event: asyncio.Event) -> None:
    async with asyncio.timeout(WAIT):
        await event.wait()


async def get(pool: UpstreamPool, target: bytes = b"/") -> upstream_pool.Answer:
    return await pool.request(b"GET", target, [], b"")


# Reuse.
def test_a_connection_is_reused_for_the_next_request() -> None:
    async def scenario() -> None:
        async with Upstream(always(OK)) as upstream:
            pool = UpstreamPool(upstream.url)
            for target in (b"/1", b"/2", b"/3"):
                answer = await get(pool, target)
                assert (answer.status, answer.body) == (200, b"ok")
            assert len(upstream.peers) == 1
            assert len(upstream.peers[0].requests) == 3
            pool.close()
            await waited(upstream.peers[0].closed)

    asyncio.run(scenario())


def test_a_connection_idle_longer_than_the_idle_timeout_is_not_reused() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        idle_timeout = 0.3
        async with Upstream(always(OK)) as upstream:
            pool = UpstreamPool(upstream.url, idle_timeout=idle_timeout)
            started = loop.time()
            await get(pool)
            await get(pool)
            if loop.time() - started <= idle_timeout:  # (a stalled machine may take longer)
                assert len(upstream.peers) == 1  # reused while young
            idle_from = loop.time()  # after the pool took the connection back
            async with asyncio.timeout(WAIT):
                while loop.time() - idle_from <= idle_timeout:
                    await asyncio.sleep(0.01)
            peers = len(upstream.peers)
            assert (await get(pool)).body == b"ok"
            assert len(upstream.peers) == peers + 1
            await waited(upstream.peers[-2].closed)  # the old one is closed, not kept
            pool.close()

    asyncio.run(scenario())


def test_an_answer_saying_connection_close_is_not_reused() -> None:
    async def scenario() -> None:
        closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
        async with Upstream(always(closing)) as upstream:
            pool = UpstreamPool(upstream.url)
            assert (await get(pool)).body == b"ok"
            await waited(upstream.peers[0].closed)
            assert (await get(pool)).body == b"ok"
            assert len(upstream.peers) == 2

    asyncio.run(scenario())


# Failures.
def failure_of(url: str) -> UpstreamFailure:
    async def post() -> None:
        await UpstreamPool(url).request(b"POST", b"/call", [], b"x")

    with pytest.raises(UpstreamFailure) as caught:
        asyncio.run(post())
    return caught.value


def test_a_refused_connection_is_not_connected(refusing_url: str) -> None:
    failure = failure_of(refusing_url)
    assert failure.failure is Failure.NOT_CONNECTED
    assert "Connection refused" in failure.reason


@pytest.mark.parametrize(
    ("answer", "failure", "words"),
    [
        (HANG_UP, Failure.UNANSWERED, "closed the connection unanswered"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
            Failure.BROKEN_ANSWER,
            "after 10 of the 100 bytes",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-len", Failure.BROKEN_ANSWER, "closed it half-way"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            Failure.BROKEN_ANSWER,
            "closed it half-way",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", Failure.BROKEN_ANSWER, "NOT HTTP AT ALL"),
        (RESET, Failure.CONNECTION_LOST, "Connection reset by peer"),
    ],
    ids=["unanswered", "body-cut-short", "head-cut-short", "chunks-cut-short", "garbage", "reset"],
)
def test_each_way_an_upstream_fails_is_its_failure(
    answer: Answer, failure: Failure, words: str
) -> None:
    upstream = RawServer([answer])
    try:
        caught = failure_of(upstream.url)
    finally:
        upstream.close()
    assert caught.failure is failure
    assert words in caught.reason
    assert len(upstream.requests) == 1


# Answers.
def test_an_answer_delimited_by_the_end_of_the_connection_is_returned_whole() -> None:
    body = bytes(range(256)) * 1000  # more than one read
    upstream = RawServer(
        [b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n" + body]
    )

    async def scenario() -> upstream_pool.Answer:
        return await get(UpstreamPool(upstream.url))

    try:
        answer = asyncio.run(scenario())
    finally:
        upstream.close()
    assert (answer.status, len(answer.body)) == (200, len(body))
    assert answer.body == body


def test_chunks_are_joined_and_the_connection_reused() -> None:
    async def scenario() -> None:
        chunked = always(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6\r\n world\r\n",
            b"0\r\n\r\n",
        )
        async with Upstream(chunked) as upstream:
            pool = UpstreamPool(upstream.url)
            for _ in range(2):
                answer = await get(pool)
                assert (answer.status, answer.body) == (200, b"hello world")
                assert (b"transfer-encoding", b"chunked") in answer.headers
            assert len(upstream.peers) == 1
            pool.close()

    asyncio.run(scenario())


def test_head_returns_no_body_and_its_connection_is_not_reused() -> None:
    def answer(request: bytes) -> Reply:
        if request.startswith(b"HEAD "):
            return [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"]
        return [OK]

    async def scenario() -> None:
        async with Upstream(answer) as upstream:
            pool = UpstreamPool(upstream.url)
            head = await pool.request(b"HEAD", b"/", [], b"")
            assert (head.status, head.body) == (200, b"")
            assert head.headers == [(b"content-type", b"text/plain"), (b"content-length", b"5")]
            await waited(upstream.peers[0].closed)
            assert (await get(pool)).body == b"ok"
            assert len(upstream.peers) == 2
            pool.close()

    asyncio.run(scenario())


def test_a_cancelled_request_closes_its_connection_and_the_next_uses_a_fresh_one() -> None:
    def answer(request: bytes) -> Reply:
        return None if request.startswith(b"GET /silent ") else [OK]

    async def scenario() -> None:
        async with Upstream(answer) as upstream:
            pool = UpstreamPool(upstream.url)
            assert (await get(pool, b"/first")).body == b"ok"  # a connection to reuse
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(get(pool, b"/silent"), 0.2)
            await waited(upstream.peers[0].closed)
            assert (await get(pool, b"/next")).body == b"ok"
            assert [peer.requests[-1].split(b" ")[1] for peer in upstream.peers] == [
                b"/silent",
                b"/next",
            ]
            pool.close()

    asyncio.run(scenario())


def test_a_request_cancelled_as_its_answer_arrives_closes_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deadline (`asyncio.timeout`, as ic-gateway's `Forwarder` sets) whose timer runs in
    the same loop iteration as the answer's bytes: the task is cancelled after its answer is
    in, and the connection must neither stay open nor go back to the pool."""
    made: list[upstream_pool._Connection] = []
    deadline: list[asyncio.Task[upstream_pool.Answer]] = []

    class CancelledOnArrival(upstream_pool._Connection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(self)
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            deadline[0].cancel()  # as the deadline's timer, right after in the same iteration

    monkeypatch.setattr(upstream_pool, "_Connection", CancelledOnArrival)

    async def scenario() -> None:
        async with Upstream(always(OK)) as upstream:
            pool = UpstreamPool(upstream.url)
            deadline.append(asyncio.create_task(get(pool)))
            with pytest.raises(asyncio.CancelledError):
                await deadline[0]
            [connection] = made
            assert connection.transport is not None
            assert connection.transport.is_closing()  # not left open, out of the pool

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [b"100 Continue", b"103 Early Hints"])
def test_an_interim_1xx_answer_is_skipped_for_the_final_one(status: bytes) -> None:
    async def scenario() -> None:
        interim = b"HTTP/1.1 %s\r\nlink: </style.css>; rel=preload\r\n\r\n" % status
        async with Upstream(always(interim + OK)) as upstream:
            pool = UpstreamPool(upstream.url)
            answer = await get(pool)
            assert (answer.status, answer.body) == (200, b"ok")
            pool.close()

    asyncio.run(scenario())


def test_bytes_after_a_complete_answer_in_the_same_read_make_the_connection_unusable() -> None:
    unsolicited = b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n"  # its body never comes
    answers = [[OK + unsolicited], [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]]

    async def scenario() -> None:
        async with Upstream(lambda request: answers.pop(0) if answers else [OK]) as upstream:
            pool = UpstreamPool(upstream.url)
            first = await get(pool)
            assert first.headers == [(b"content-type", b"text/plain"), (b"content-length", b"2")]
            second = await get(pool)
            assert (second.status, second.body) == (200, b"hello")
            pool.close()

    asyncio.run(scenario())


# The request on the wire.
def test_the_request_bytes_on_the_wire() -> None:
    async def scenario() -> None:
        async with Upstream(always(OK)) as upstream:
            port = upstream.url.rsplit(":", 1)[1].encode()
            headers = [(b"x-one", b"1"), (b"content-type", b"application/cbor"), (b"x-two", b"2")]
            pool = UpstreamPool(upstream.url)
            await pool.request(b"POST", b"/api/v2/status?x=1", headers, b"")
            await pool.request(b"GET", b"/get", [(b"accept", b"*/*")], b"")
            await pool.request(b"PUT", b"/put", [], b"body")
            pool.close()
            [peer] = upstream.peers
            host = b"host: 127.0.0.1:" + port + b"\r\n"
            assert peer.requests == [
                b"POST /api/v2/status?x=1 HTTP/1.1\r\n"
                + host
                + b"x-one: 1\r\ncontent-type: application/cbor\r\nx-two: 2\r\n"
                + b"content-length: 0\r\n\r\n",
                b"GET /get HTTP/1.1\r\n" + host + b"accept: */*\r\n\r\n",
                b"PUT /put HTTP/1.1\r\n" + host + b"content-length: 4\r\n\r\nbody",
            ]

    asyncio.run(scenario())
