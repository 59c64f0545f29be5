"""The retry rule ic-gateway and ic-boundary share (`harness.node.retry`): which failures of the
upstream pool (`harness.node.upstream_pool`, on what raw TCP stand-ins for replicas really do)
and which answers are retryable, and both programs' real request paths (each on the
protocol-level server, forwarding through the pool) retrying the same failures alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from raw_http import HANG_UP, RESET, SILENCE, Answer, RawServer

from harness.node.boundary.app import Boundary
from harness.node.boundary.app import bad_request as boundary_bad_request
from harness.node.boundary.config import StaticUpstream
from harness.node.boundary.metrics import BoundaryMetrics
from harness.node.boundary.routing import Balancer, RoutingTable
from harness.node.boundary.upstream import make_client
from harness.node.gateway.forward import Forwarder
from harness.node.gateway.health import HealthCheck
from harness.node.gateway.metrics import GatewayMetrics
from harness.node.gateway.proxy import Gateway, bad_request
from harness.node.gateway.upstream import PooledUpstream
from harness.node.http_server import HttpServer
from harness.node.listen import ListenAddress
from harness.node.retry import Failure, retryable_status
from harness.node.serve import bind
from harness.node.upstream_pool import Timeouts, UpstreamFailure, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: 2\r\n\r\nok"
HEAD_CUT_SHORT = b"HTTP/1.1 200 OK\r\ncontent-len"
BODY_CUT_SHORT = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"
GARBAGE = b"NOT HTTP AT ALL\r\n\r\n"
# Each program gets this long for an answer (ic-gateway's whole deadline, ic-boundary's wait for
# a byte); a silent replica says nothing for longer.
TIMEOUT = 1.0
SILENT_FOR = 2.0


def answered(status: int) -> bytes:
    return b"HTTP/1.1 %d Whatever\r\ncontent-length: 4\r\n\r\nnope" % status


# The pool's failures, on what a replica really does.
def failed_with(url: str) -> UpstreamFailure:
    """What the upstream pool raises for a POST to `url` (waiting `TIMEOUT` for each byte of
    an answer, as ic-boundary's pools do)."""
    timeouts = Timeouts(connect=TIMEOUT, read=TIMEOUT, total=3 * TIMEOUT)

    async def post() -> None:
        pool = UpstreamPool(url, timeouts=timeouts)
        try:
            await pool.request(b"POST", b"/api/v3/canister/aaaaa-aa/call", [], b"x")
        finally:
            pool.close()

    try:
        asyncio.run(post())
    except UpstreamFailure as exc:
        return exc
    raise AssertionError(f"a POST to {url} did not fail")


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        (HANG_UP, Failure.UNANSWERED),
        (HEAD_CUT_SHORT, Failure.BROKEN_ANSWER),
        (BODY_CUT_SHORT, Failure.BROKEN_ANSWER),
        (GARBAGE, Failure.BROKEN_ANSWER),
        (RESET, Failure.CONNECTION_LOST),
        (SILENCE, Failure.TIMED_OUT),
    ],
    ids=["closed-unanswered", "head-cut-short", "body-cut-short", "garbage", "reset", "silence"],
)
def test_what_the_pool_says_of_a_replica_that_fails(answer: Answer, failure: Failure) -> None:
    replica = RawServer([answer], silence=SILENT_FOR)
    try:
        assert failed_with(replica.url).failure is failure
    finally:
        replica.close()
    assert len(replica.requests) == 1


def test_a_refused_connection_is_not_connected(refusing_url: str) -> None:
    failed = failed_with(refusing_url)
    assert (failed.failure, failed.reason) == (Failure.NOT_CONNECTED, "Connection refused")


def test_only_failures_before_any_answer_are_retryable() -> None:
    retryable = {failure for failure in Failure if failure.retryable}
    assert retryable == {Failure.NOT_CONNECTED, Failure.UNANSWERED}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (200, False),
        (202, False),
        (204, False),
        (304, False),
        (400, False),
        (403, False),
        (404, False),
        (413, False),
        (428, False),
        (429, True),
        (431, False),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
    ],
)
def test_429_and_5xx_answers_are_retryable(status: int, retryable: bool) -> None:
    assert retryable_status(status) is retryable


# Both programs, on their real request paths.
DOMAIN = "api.retry.test"
CALL = "/api/v3/canister/rwlgt-iiaaa-aaaaa-aaaaa-cai/call"


@dataclass(frozen=True)
class Outcome:
    """What the client got, and whether the request went on to the second replica."""

    status: int
    body: bytes
    retried: bool


async def _post(server: HttpServer) -> httpx.Response:
    """POST a call to `server`, served on a loopback port for the one request."""
    sock = bind(ListenAddress("127.0.0.1", 0), "api")
    port = sock.getsockname()[1]
    stopped = asyncio.Event()
    serving = asyncio.create_task(server.serve(sock, stopped, 1))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            return await client.post(CALL, content=b"x", headers={"host": DOMAIN})
    finally:
        stopped.set()
        await serving


async def through_gateway(urls: list[str]) -> httpx.Response:
    """ic-gateway with `urls` as IC_URL and one attempt per URL."""
    upstreams = [PooledUpstream(url) for url in urls]
    forwarder = Forwarder(upstreams, len(urls), 0.001, TIMEOUT)
    health = HealthCheck(upstreams, 1.0, TIMEOUT)
    gateway = Gateway({DOMAIN}, forwarder, health, GatewayMetrics())
    return await _post(HttpServer(gateway, bad_request, 1024))


async def through_boundary(urls: list[str]) -> httpx.Response:
    """ic-boundary with `urls` as the healthy replicas of the one subnet, in that order."""
    balancer = Balancer(RoutingTable.from_upstreams(StaticUpstream("s-x", url) for url in urls))
    balancer.set_healthy(balancer.table.replicas)
    async with make_client(TIMEOUT) as client:
        boundary = Boundary(DOMAIN, balancer, client, BoundaryMetrics(balancer))
        return await _post(HttpServer(boundary, boundary_bad_request, 1024))


Program = Callable[[list[str]], Coroutine[Any, Any, httpx.Response]]


def outcome(program: Program, first: Answer | str) -> Outcome:
    """Send a call through `program` to two replicas: the first fails with `first` (an answer,
    or the URL of one that refuses connections), the second answers 200 ``ok``."""
    if isinstance(first, str):
        replica, first_url = None, first
    else:
        replica = RawServer([first], silence=SILENT_FOR)
        first_url = replica.url
    second = RawServer([OK])
    try:
        response = asyncio.run(program([first_url, second.url]))
    finally:
        second.close()
        if replica is not None:
            replica.close()
    if replica is not None:
        assert len(replica.requests) == 1  # the first replica got the call once
    return Outcome(response.status_code, response.content, len(second.requests) == 1)


RETRIED = Outcome(200, b"ok", retried=True)
REFUSED = "refused"  # the first replica refuses connections (`refusing_url`)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (REFUSED, RETRIED),
        (HANG_UP, RETRIED),
        (answered(429), RETRIED),
        (answered(500), RETRIED),
        (answered(502), RETRIED),
        (answered(503), RETRIED),
        (answered(504), RETRIED),
        (answered(404), Outcome(404, b"nope", retried=False)),
        (HEAD_CUT_SHORT, Outcome(502, b"", retried=False)),
        (BODY_CUT_SHORT, Outcome(502, b"", retried=False)),
        (GARBAGE, Outcome(502, b"", retried=False)),
        (RESET, Outcome(502, b"", retried=False)),
        (SILENCE, Outcome(504, b"", retried=False)),
    ],
    ids=[
        "refused",
        "closed-unanswered",
        "429",
        "500",
        "502",
        "503",
        "504",
        "404",
        "head-cut-short",
        "body-cut-short",
        "garbage",
        "reset",
        "silence",
    ],
)
def test_gateway_and_boundary_retry_the_same_failures_alike(
    first: Answer | str, expected: Outcome, refusing_url: str
) -> None:
    failing = refusing_url if first == REFUSED else first
    gateway = outcome(through_gateway, failing)
    boundary = outcome(through_boundary, failing)
    if expected.body:
        assert gateway == boundary == expected
    else:  # the programs' own error pages say it each in its words
        assert (gateway.status, gateway.retried) == (expected.status, expected.retried)
        assert (boundary.status, boundary.retried) == (expected.status, expected.retried)
