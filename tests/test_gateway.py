"""ic-gateway as a process: proxying, Host checks, limits, upstream failures, health, metrics,
graceful stop.

The replica is a fake served by uvicorn in a background thread on the test's loopback address,
port 8080: it answers `/api/v2/status` with a health the test sets, records every request, and
can be told to wait before answering or to answer with a given status.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cbor2
import httpx
import pytest
import uvicorn
from conftest import Program
from prometheus_client.parser import text_string_to_metric_families
from raw_http import HANG_UP, RawServer

from harness.node.status import (
    CONTENT_TYPE_CBOR,
    CORS_HEADERS,
    IC_API_VERSION,
    StatusResponse,
    decode_status,
    encode_status,
)

MODULE = "harness.node.gateway"
DOMAIN = "ic0.test"
OTHER_DOMAIN = "gw.example"
REPLICA_PORT = 8080
CANISTER = "rwlgt-iiaaa-aaaaa-aaaaa-cai"
CALL = f"/api/v3/canister/{CANISTER}/call"


# The fake replica.
@dataclass(frozen=True)
class Seen:
    """One request the fake replica got."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass
class FakeReplica:
    """A replica stand-in on `ip:8080`; every field may be changed while it runs."""

    ip: str
    health: str = "healthy"
    delay: float = 0.0
    reply_status: int = 200
    reply_body: bytes | None = None
    seen: list[Seen] = field(default_factory=list)
    status_requests: int = 0
    got_request: threading.Event = field(default_factory=threading.Event)
    server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{REPLICA_PORT}"

    def status_body(self) -> bytes:
        return encode_status(
            StatusResponse(
                ic_api_version=IC_API_VERSION,
                replica_health_status=self.health,
                certified_height=7,
            )
        )

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        target = scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        headers = [(name.decode(), value.decode()) for name, value in scope["headers"]]
        if scope["path"] == "/api/v2/status":
            self.status_requests += 1
            await _respond(send, 200, self.status_body(), [(b"content-type", b"application/cbor")])
            return
        self.seen.append(Seen(scope["method"], target, headers, body))
        self.got_request.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        extra = [
            (b"content-type", b"text/plain" if self.reply_body else CONTENT_TYPE_CBOR.encode()),
            (b"x-replica", b"fake"),
            (b"connection", b"x-private"),
            (b"x-private", b"named by Connection"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authenticate", b"Basic"),
            (b"trailer", b"x-checksum"),
            (b"upgrade", b"h2c"),
        ]
        answer = body if self.reply_body is None else self.reply_body
        await _respond(send, self.reply_status, answer, extra)

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            host=self.ip,
            port=REPLICA_PORT,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "fake replica did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def replica(loopback_ip: str) -> Iterator[FakeReplica]:
    fake = FakeReplica(loopback_ip)
    fake.start()
    yield fake
    fake.stop()


# The gateway.
@dataclass
class Gateway:
    program: Program
    ip: str

    @property
    def url(self) -> str:
        return f"http://{self.ip}:80"

    def client(self, host: str = DOMAIN, **kwargs: Any) -> httpx.Client:
        # Sent from the test's own address, so X-Forwarded-For can be checked exactly.
        transport = httpx.HTTPTransport(local_address=self.ip)
        return httpx.Client(
            base_url=self.url, headers={"host": host}, transport=transport, timeout=10, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.post(path, **kwargs)

    def metrics(self) -> str:
        return httpx.get(f"http://{self.ip}:9325/metrics", timeout=5).text


@pytest.fixture
def run_gateway(start_program: Callable[..., Program], loopback_ip: str) -> Callable[..., Gateway]:
    def run(ic_url: str | None = None, **settings: str) -> Gateway:
        env = {
            "LISTEN_PLAIN": f"{loopback_ip}:80",
            "IC_URL": ic_url or f"http://{loopback_ip}:{REPLICA_PORT}",
            "DOMAIN": f"{DOMAIN},{OTHER_DOMAIN}",
            "METRICS_LISTEN": f"{loopback_ip}:9325",
            "IC_REQUEST_RETRY_INTERVAL": "10ms",
            # Other keys of the real gateway's env file, which must be ignored.
            "LOG_STDOUT": "true",
            "CERT_PROVIDER_DIR": "/certs",
            **settings,
        }
        program = start_program(MODULE, env=env, ready_url=f"http://{loopback_ip}:9325/metrics")
        return Gateway(program, loopback_ip)

    return run


@pytest.fixture
def gateway(run_gateway: Callable[..., Gateway], replica: FakeReplica) -> Gateway:
    return run_gateway()


def raw_request(ip: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client fixing them up); read the answer until the server
    closes the connection. Returns status, headers (lowercase names) and body."""
    with socket.create_connection((ip, 80), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels`; 0 if there is none."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


CORS = {name: value for name, value in CORS_HEADERS}


def assert_text_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    for fragment in fragments:
        assert fragment in response.text
    for name, value in CORS.items():
        assert response.headers[name] == value


# Proxying.
def test_status_is_passed_through_byte_for_byte(gateway: Gateway, replica: FakeReplica) -> None:
    response = gateway.get("/api/v2/status?verbose=1")
    assert response.status_code == 200
    assert response.content == replica.status_body()
    assert response.headers["content-type"] == "application/cbor"
    assert response.headers["content-length"] == str(len(replica.status_body()))
    assert decode_status(response.content).replica_health_status == "healthy"

    head = gateway.client().head("/api/v2/status")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(replica.status_body()))
    assert replica.status_requests == 2


def test_post_body_is_forwarded_intact_with_path_and_query(
    gateway: Gateway, replica: FakeReplica
) -> None:
    envelope = cbor2.dumps({"content": {"arg": bytes(range(256)) * 3, "nonce": b"\x00" * 200}})
    envelope = (envelope + b"\x00" * 1024)[:1024]
    response = gateway.post(
        f"{CALL}?trace=a%2Fb", content=envelope, headers={"content-type": "application/cbor"}
    )
    assert response.status_code == 200
    assert response.content == envelope
    assert response.headers["x-replica"] == "fake"
    [seen] = replica.seen
    assert (seen.method, seen.target, seen.body) == ("POST", f"{CALL}?trace=a%2Fb", envelope)
    assert seen.header("content-type") == ["application/cbor"]
    assert seen.header("content-length") == ["1024"]


API_ROUTES = [
    f"/api/v2/canister/{CANISTER}/query",
    f"/api/v2/canister/{CANISTER}/call",
    f"/api/v2/canister/{CANISTER}/read_state",
    "/api/v2/subnet/tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe/read_state",
    f"/api/v3/canister/{CANISTER}/query",
    f"/api/v3/canister/{CANISTER}/call",
    f"/api/v3/canister/{CANISTER}/read_state",
    "/api/v3/subnet/aaaaa-aa/read_state",
    "/api/v3/subnet/aaaaa-aa/query",
    f"/api/v4/canister/{CANISTER}/call",
    "/api/v4/subnet/aaaaa-aa/call",
]


def test_every_api_route_reaches_the_replica(gateway: Gateway, replica: FakeReplica) -> None:
    with gateway.client() as client:
        for path in API_ROUTES:
            response = client.post(path, content=b"\xd9\xd9\xf7\xa0")
            assert response.status_code == 200, (path, response.text)
    assert [(s.method, s.target) for s in replica.seen] == [("POST", p) for p in API_ROUTES]
    # The client sent no Content-Type: none is added (aiohttp's own would be
    # application/octet-stream). Its User-Agent goes through, not the gateway's client's.
    for seen in replica.seen:
        assert seen.header("content-type") == []
        assert seen.header("user-agent") == [f"python-httpx/{httpx.__version__}"]


def test_replica_errors_are_passed_through_and_only_5xx_retried(
    gateway: Gateway, replica: FakeReplica
) -> None:
    replica.reply_status, replica.reply_body = 404, b"canister not found\n"
    response = gateway.post(CALL, content=b"x")
    assert (response.status_code, response.text) == (404, "canister not found\n")
    assert response.headers["content-type"] == "text/plain"
    assert len(replica.seen) == 1

    # 5xx and 429 are retried (IC_REQUEST_RETRIES=4 attempts in all), then passed on.
    replica.reply_status, replica.reply_body = 503, b"The service is overloaded.\n"
    response = gateway.post(CALL, content=b"x")
    assert (response.status_code, response.text) == (503, "The service is overloaded.\n")
    assert len(replica.seen) == 1 + 4
    metrics = gateway.metrics()
    upstream = f"{replica.ip}:{REPLICA_PORT}"
    assert metric(metrics, "ic_gateway_upstream_requests_total", outcome="503") == 4
    assert metric(metrics, "ic_gateway_upstream_requests_total", outcome="404") == 1
    assert (
        metric(metrics, "ic_gateway_http_total", status="503", error="none", upstream=upstream) == 1
    )


def test_hop_by_hop_headers_are_dropped_both_ways_and_forwarding_headers_added(
    gateway: Gateway, replica: FakeReplica
) -> None:
    def chunked_body() -> Iterator[bytes]:
        yield b"first,"
        yield b"second"

    with gateway.client(host="IC0.Test.:80") as client:
        response = client.post(
            CALL,
            content=chunked_body(),
            headers={
                "connection": "keep-alive, x-secret",
                "x-secret": "named by Connection",
                "keep-alive": "timeout=5",
                "proxy-authorization": "Basic dXNlcjpwdw==",
                "te": "trailers",
                "trailer": "x-checksum",
                "upgrade": "h2c",
                "x-forwarded-for": "203.0.113.7",
                "x-forwarded-proto": "https",
                "x-forwarded-host": "spoofed.example",
                "x-kept": "yes",
            },
        )
    assert response.status_code == 200
    [seen] = replica.seen
    names = {name for name, _ in seen.headers}
    dropped = {"connection", "x-secret", "keep-alive", "proxy-authorization", "te", "trailer"}
    assert not names & (dropped | {"upgrade", "transfer-encoding"})
    assert seen.body == b"first,second"
    assert seen.header("content-length") == ["12"]
    assert seen.header("host") == [f"{replica.ip}:{REPLICA_PORT}"]
    assert seen.header("x-kept") == ["yes"]
    assert seen.header("x-forwarded-for") == [f"203.0.113.7, {gateway.ip}"]
    assert seen.header("x-forwarded-proto") == ["http"]
    assert seen.header("x-forwarded-host") == ["IC0.Test.:80"]

    assert response.headers["x-replica"] == "fake"
    for name in ("x-private", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert name not in response.headers, name
    assert response.headers.get("connection") in (None, "keep-alive")
    # Set on successes as the real gateway does.
    assert response.headers["content-type"] == "application/cbor"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


# The gateway's own answers.
def test_host_is_checked_on_every_route(gateway: Gateway, replica: FakeReplica) -> None:
    status, headers, body = raw_request(gateway.ip, b"GET /api/v2/status HTTP/1.0\r\n\r\n")
    assert (status, body) == (400, b"Missing Authority\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"

    for path in ("/api/v2/status", "/health", "/no/such/path", CALL):
        with gateway.client(host="evil.example") as client:
            assert_text_error(client.get(path), 400, "Unknown Domain: evil.example")
    for host in (DOMAIN, f"{OTHER_DOMAIN}:80", f"{DOMAIN.upper()}.", f"{DOMAIN}:8443"):
        with gateway.client(host=host) as client:
            assert client.get("/api/v2/status").status_code == 200, host
    assert replica.status_requests == 4
    assert replica.seen == []


def test_unknown_path_is_404_wrong_method_405_and_preflight_204(
    gateway: Gateway, replica: FakeReplica
) -> None:
    for path in ("/", "/api/v2/canister//call", f"/api/v2/canister/{CANISTER}/bogus", "/api/v5/x"):
        assert_text_error(gateway.get(path), 404, f"Not Found: no route for {path}")
    response = gateway.get(CALL)
    assert_text_error(response, 405, f"Method Not Allowed: GET {CALL}")
    assert response.headers["allow"] == "POST, OPTIONS"
    response = gateway.post("/api/v2/status")
    assert_text_error(response, 405)
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"

    # OPTIONS on an API route is the CORS preflight, answered by the gateway.
    with gateway.client() as client:
        response = client.options(CALL, headers={"origin": "https://dapp.example"})
    assert response.status_code == 204
    assert response.content == b""
    for name, value in CORS.items():
        assert response.headers[name] == value
    assert replica.seen == []
    assert replica.status_requests == 0


def test_forward_proxy_requests_are_refused(gateway: Gateway, replica: FakeReplica) -> None:
    status, headers, body = raw_request(
        gateway.ip,
        b"GET http://evil.example/api/v2/status HTTP/1.1\r\nHost: ic0.test\r\n\r\n",
    )
    assert status == 400
    assert b"is not a forward proxy" in body
    assert b"http://evil.example/api/v2/status" in body
    assert headers["connection"] == "close"

    status, _, body = raw_request(
        gateway.ip, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
    )
    assert status == 405
    assert body == b"CONNECT evil.example:443 is not supported: ic-gateway is not a forward proxy\n"

    status, _, body = raw_request(
        gateway.ip, b"GET http://evil.example HTTP/1.1\r\nHost: ic0.test\r\n\r\n"
    )
    assert status == 400
    assert b"is not a forward proxy" in body
    assert replica.status_requests == 0
    assert replica.seen == []


def test_request_bodies_over_the_limit_are_413(
    run_gateway: Callable[..., Gateway], replica: FakeReplica
) -> None:
    gateway = run_gateway(IC_REQUEST_MAX_SIZE="1KiB")
    assert gateway.post(CALL, content=b"x" * 1024).status_code == 200

    response = gateway.post(CALL, content=b"x" * 1025)
    assert_text_error(response, 413, "1025 bytes", "the maximum is 1024 bytes")

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * 300

    with gateway.client() as client:
        response = client.post(CALL, content=chunks())
    assert_text_error(response, 413, "the maximum is 1024 bytes")
    assert [len(seen.body) for seen in replica.seen] == [1024]


# Upstream trouble.
def test_unreachable_upstream_is_retried_then_502_and_health_503(
    run_gateway: Callable[..., Gateway],
) -> None:
    # Nothing listens on the replica port of this address.
    gateway = run_gateway(IC_REQUEST_RETRIES="3", IC_REQUEST_RETRY_INTERVAL="50ms")
    upstream = f"{gateway.ip}:{REPLICA_PORT}"
    started = time.monotonic()
    response = gateway.post(CALL, content=b"x")
    elapsed = time.monotonic() - started
    assert_text_error(
        response, 502, f"upstream http://{upstream} unreachable:", "Connection refused"
    )
    assert elapsed >= 0.05 + 0.1  # the pauses between the 3 attempts
    metrics = gateway.metrics()
    attempts = metric(
        metrics, "ic_gateway_upstream_requests_total", outcome="backend_error_connect"
    )
    assert attempts == 3
    assert (
        metric(
            metrics,
            "ic_gateway_http_total",
            method="POST",
            status="502",
            error="backend_error_connect",
            upstream=upstream,
        )
        == 1
    )
    assert_text_error(
        gateway.get("/health"),
        503,
        f"upstream http://{upstream} is not healthy: unreachable: Connection refused",
    )


def test_retry_moves_on_to_the_next_ic_url(
    run_gateway: Callable[..., Gateway], replica: FakeReplica, make_loopback_ip: Callable[[], str]
) -> None:
    dead = f"http://{make_loopback_ip()}:{REPLICA_PORT}"
    gateway = run_gateway(ic_url=f"{dead},{replica.url}")
    for _ in range(4):
        assert gateway.post(CALL, content=b"x").status_code == 200
    assert len(replica.seen) == 4
    metrics = gateway.metrics()
    assert metric(metrics, "ic_gateway_upstream_requests_total", outcome="200") == 4
    # Round-robin: every other request starts at the dead URL and moves on.
    assert (
        metric(metrics, "ic_gateway_upstream_requests_total", outcome="backend_error_connect") == 2
    )


def test_upstream_that_hangs_up_unanswered_is_retried(
    run_gateway: Callable[..., Gateway], loopback_ip: str
) -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: 2\r\n\r\nok"
    upstream = RawServer([HANG_UP, ok], loopback_ip, REPLICA_PORT)
    try:
        gateway = run_gateway(IC_REQUEST_RETRIES="2")
        response = gateway.post(CALL, content=b"x")
    finally:
        upstream.close()
    assert response.status_code == 200, response.text
    assert response.content == b"ok"
    assert len(upstream.requests) == 2
    metrics = gateway.metrics()
    # Hanging up unanswered counts as a connect error, like a refused connection.
    assert (
        metric(metrics, "ic_gateway_upstream_requests_total", outcome="backend_error_connect") == 1
    )
    assert metric(metrics, "ic_gateway_upstream_requests_total", outcome="200") == 1


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
            "closed it half-way, after 10 of the 100 bytes its content-length header announced",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-len", "closed it half-way"),
        (b"NOT HTTP AT ALL\r\n\r\n", "NOT HTTP AT ALL"),
    ],
    ids=["body-cut-short", "head-cut-short", "garbage"],
)
def test_upstream_that_breaks_off_its_answer_is_502_and_not_retried(
    run_gateway: Callable[..., Gateway], loopback_ip: str, answer: bytes, said: str
) -> None:
    upstream = RawServer([answer, answer], loopback_ip, REPLICA_PORT)
    try:
        gateway = run_gateway(IC_REQUEST_RETRIES="2")
        response = gateway.post(CALL, content=b"x")
    finally:
        upstream.close()
    assert_text_error(
        response, 502, f"upstream http://{loopback_ip}:{REPLICA_PORT} sent a broken answer: ", said
    )
    # The request may have been processed: it is not sent again.
    assert len(upstream.requests) == 1
    metrics = gateway.metrics()
    assert metric(metrics, "ic_gateway_http_total", status="502", error="backend_error_other") == 1


def test_slow_upstream_is_504(run_gateway: Callable[..., Gateway], replica: FakeReplica) -> None:
    gateway = run_gateway(IC_RESPONSE_TIMEOUT="300ms")
    replica.delay = 3.0  # far past the deadline, whatever the machine's load adds to it
    started = time.monotonic()
    response = gateway.post(CALL, content=b"x")
    elapsed = time.monotonic() - started
    assert_text_error(response, 504, f"upstream {replica.url} did not answer within 0.3s")
    assert 0.3 <= elapsed < replica.delay
    assert len(replica.seen) == 1  # a timeout is not retried
    assert metric(gateway.metrics(), "ic_gateway_http_total", error="backend_timeout") == 1


# Health.
def test_health_follows_the_replica_status(gateway: Gateway, replica: FakeReplica) -> None:
    response = gateway.get("/health")
    assert response.status_code == 204
    assert response.content == b""

    replica.health = "starting"
    wait_until(lambda: gateway.get("/health").status_code == 503, what="/health to say 503")
    assert_text_error(
        gateway.get("/health"), 503, f"upstream {replica.url} is not healthy", "'starting'"
    )

    replica.health = "healthy"
    wait_until(lambda: gateway.get("/health").status_code == 204, what="/health to say 204")


def test_health_flood_is_one_status_request(gateway: Gateway, replica: FakeReplica) -> None:
    limits = httpx.Limits(max_connections=50)
    started = time.monotonic()
    with gateway.client(limits=limits) as client, ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(lambda _: client.get("/health").status_code, range(50)))
    elapsed = time.monotonic() - started
    assert statuses == [204] * 50
    # A verdict lives 250 ms and concurrent checks share one probe: one probe per 250 ms the
    # flood lasted (plus the first and one in flight), where without the cache there would be
    # 50. Bounded by the time it took, so that a starved machine's slower flood is no failure.
    assert 1 <= replica.status_requests <= min(49, int(elapsed / 0.25) + 2), elapsed


# Metrics.
def test_metrics_count_requests_by_outcome(gateway: Gateway, replica: FakeReplica) -> None:
    for _ in range(3):
        assert gateway.get("/api/v2/status").status_code == 200
    assert gateway.get("/nowhere").status_code == 404
    with gateway.client(host="evil.example") as client:
        assert client.get("/api/v2/status").status_code == 400

    text = gateway.metrics()
    upstream = f"{replica.ip}:{REPLICA_PORT}"
    ok = {"method": "GET", "http": "HTTP/1.1", "status": "200", "error": "none"}
    assert metric(text, "ic_gateway_http_total", **ok, upstream=upstream) == 3
    assert metric(text, "ic_gateway_http_duration_sec_count", **ok, upstream=upstream) == 3
    assert metric(text, "ic_gateway_http_total", status="404", error="not_found", upstream="") == 1
    assert metric(text, "ic_gateway_http_total", status="400", error="unknown_domain") == 1
    # The metrics scrape itself (the readiness check) is not counted.
    assert metric(text, "ic_gateway_http_total") == 5
    assert httpx.get(f"http://{gateway.ip}:9325/other").status_code == 404


# Stopping.
def test_sigterm_lets_the_request_in_flight_finish(gateway: Gateway, replica: FakeReplica) -> None:
    replica.delay = 0.5
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(gateway.post, CALL, content=b"slow")
        assert replica.got_request.wait(timeout=5)
        gateway.program.process.send_signal(signal.SIGTERM)
        response = pending.result(timeout=10)
    assert (response.status_code, response.content) == (200, b"slow")
    assert gateway.program.process.wait(timeout=10) == 0
    assert "stopped" in gateway.program.log_text()


# Configuration.
def _run_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("IC_URL", "DOMAIN")}
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_settings_exit_2_naming_the_setting() -> None:
    # More cases, in-process, in test_gateway_units.py.
    result = _run_with({"IC_URL": "http://127.0.0.1:8080", "IC_REQUEST_RETRIES": "many"})
    assert result.returncode == 2
    assert "--domain / DOMAIN is required" in result.stderr
    assert "Traceback" not in result.stderr

    env = {"IC_URL": "http://127.0.0.1:8080", "DOMAIN": "ic0.test", "IC_REQUEST_RETRIES": "many"}
    result = _run_with(env)
    assert result.returncode == 2
    assert result.stderr.endswith(
        "error: IC_REQUEST_RETRIES (environment): 'many' is not a whole number >= 0\n"
    )

    result = _run_with(env, "--ic-request-retries", "2", "--ic-response-timeout", "soon")
    assert result.returncode == 2
    assert "error: --ic-response-timeout: 'soon' is not a duration" in result.stderr
