"""Bad HTTP input to a real ic-gateway in front of a real replica, property-based, over raw
sockets; and the ports a local-backend testnet publishes.

One replica (`harness.node.replica`) and one ic-gateway (`harness.node.gateway`) run for the
whole module on a loopback address of their own. Hypothesis sends them raw HTTP/1.1: odd
methods, absolute-form and CONNECT targets, odd, duplicate and missing Host headers, huge
headers, chunked bodies (truncated ones and bad chunk sizes included), Content-Length
mismatches, paths with `..`, `%2e` and very long ones. Properties:

- the gateway never answers 5xx here (the replica behind it is healthy) and never crashes: it is
  alive at the end, `/health` is 204 and its metrics count no 500;
- every rejection is a 4xx with a `text/plain` body saying why (or the connection is closed);
- an absolute-form request to another host is never forwarded: the replica's
  `replica_http_requests_total` does not move;
- the replica's metrics and dashboard-like paths and its faults file are not reachable through
  the gateway (404), and nothing sent to the gateway changes the replica's faults.

The last test starts a small local-backend testnet and checks with psutil that every socket its
processes listen on is on a 127.x address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cbor2
import httpx
import psutil
import pytest
from conftest import Program, free_loopback_ip, wait_for_http
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from harness.driver import InternetComputer, Run, Subnet, SubnetType, Testnet
from harness.driver.metrics_check import parse_metrics
from harness.driver.run import tagged_processes

T = TypeVar("T")
DOMAIN = "gateway.icp"
CANISTER = "rwlgt-iiaaa-aaaaa-aaaaa-cai"
FAULTS = {"delay_seconds": 0, "critical_errors": 0}
# How long to wait for an answer the gateway may rightly never give (a truncated request).
READ_TIMEOUT = 0.25
# How long to wait for an answer the request must get.
ANSWER_TIMEOUT = 5.0


# The stack: one replica and one gateway for the module.
@dataclass
class Stack:
    ip: str
    replica: Program
    gateway: Program
    faults: Path
    faults_content: bytes

    @property
    def replica_metrics_url(self) -> str:
        return f"http://{self.ip}:9090/metrics"


def _start(module: str, args: list[str], env: dict[str, str], log: Path) -> Program:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    return Program(process, log)


def _kill(program: Program) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(program.process.pid, signal.SIGKILL)
    program.process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A replica on `ip:8080`/`ip:9090` and ic-gateway on `ip:80` (metrics on 9325) in front of
    it, serving `gateway.icp`; both killed (process groups) at the end of the module."""
    directory = tmp_path_factory.mktemp("bad-input-gateway")
    ip = free_loopback_ip([80, 8080, 9090, 9325])
    faults = directory / "faults.json"
    faults_content = (repr(FAULTS).replace("'", '"') + "\n").encode()
    faults.write_bytes(faults_content)
    started: list[Program] = []
    try:
        replica = _start(
            "harness.node.replica",
            [
                f"--http-listen={ip}:8080",
                f"--metrics-listen={ip}:9090",
                f"--faults-file={faults}",
            ],
            {},
            directory / "replica.log",
        )
        started.append(replica)
        wait_for_http(f"http://{ip}:8080/api/v2/status", process=replica.process)
        gateway = _start(
            "harness.node.gateway",
            [],
            {
                "LISTEN_PLAIN": f"{ip}:80",
                "IC_URL": f"http://{ip}:8080",
                "DOMAIN": DOMAIN,
                "METRICS_LISTEN": f"{ip}:9325",
            },
            directory / "gateway.log",
        )
        started.append(gateway)
        deadline = time.monotonic() + 15
        while True:
            health = wait_for_http(
                f"http://{ip}/health", process=gateway.process, headers={"host": DOMAIN}
            )
            if health.status_code == 204:
                break
            assert time.monotonic() < deadline, f"/health stayed {health.status_code}"
            time.sleep(0.05)
        yield Stack(ip, replica, gateway, faults, faults_content)
    finally:
        for program in started:
            _kill(program)


# Raw HTTP/1.1 over a socket.
@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Exchange:
    responses: list[Response] = field(default_factory=list)
    closed: bool = False

    @property
    def final(self) -> list[Response]:
        return [r for r in self.responses if r.status >= 200]


def _parse(buffer: bytes, head: bool, eof: bool) -> tuple[list[Response], bytes]:
    """The complete responses at the start of `buffer`, and what is left."""
    found: list[Response] = []
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return found, buffer
        lines = buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), f"not a status line: {lines}"
        status = int(parts[1])
        headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        ]
        rest = buffer[end + 4 :]
        length = next((int(v) for k, v in headers if k == "content-length"), None)
        first_final = head and not any(r.status >= 200 for r in found)
        if status < 200 or status in (204, 304) or (first_final and status >= 200):
            length = 0
        if length is None:
            if not eof:
                return found, buffer
            length = len(rest)
        if len(rest) < length:
            return found, buffer
        found.append(Response(status, headers, rest[:length]))
        buffer = rest[length:]


def exchange(
    ip: str, request: bytes, head: bool = False, timeout: float = READ_TIMEOUT
) -> Exchange:
    """Send `request` on a new connection and read answers until the connection is closed or
    no answer has begun for `timeout` seconds (then the gateway is waiting for more)."""
    result = Exchange()
    was_head = head
    buffer = b""
    with socket.create_connection((ip, 80), timeout=5) as sock:
        with contextlib.suppress(OSError):  # the gateway may close before it has all of it
            sock.sendall(request)
        sock.settimeout(timeout)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if not buffer:
                    break
                sock.settimeout(5)  # the rest of an answer that has begun is on its way
                continue
            except ConnectionResetError:
                result.closed = True
                break
            if not chunk:
                result.closed = True
                break
            buffer += chunk
            responses, buffer = _parse(buffer, head, eof=False)
            result.responses.extend(responses)
            head = head and not result.final
            if result.final and not buffer:
                sock.settimeout(0.02)  # anything more (a pipelined answer) is already on its way
    if buffer:
        responses, buffer = _parse(buffer, head, eof=True)
        result.responses.extend(responses)
    if buffer and was_head and len(result.final) == 1 and not buffer.startswith(b"HTTP/"):
        # An answer to a HEAD that could not be parsed as one: uvicorn sends its 400's body.
        result.final[0].body, buffer = buffer, b""
    assert not buffer, f"a partial answer: {buffer[:200]!r}"
    return result


def check_answers(stack: Stack, result: Exchange, request: bytes, head: bool) -> None:
    """No 5xx; every 4xx says why in text; the gateway is alive."""
    for response in result.final:
        assert response.status < 500, (request[:500], response)
        if 400 <= response.status < 500:
            assert (response.header("content-type") or "").startswith("text/plain"), response
            assert head or response.body.strip(), response
    assert stack.gateway.process.poll() is None, stack.gateway.log_text()[-3000:]


def replica_requests(stack: Stack, route: str | None = None) -> float:
    """The replica's `replica_http_requests_total`, summed (over one `route` if given)."""
    text = httpx.get(stack.replica_metrics_url, timeout=5).text
    return sum(
        s.value
        for s in parse_metrics(text, stack.replica_metrics_url)
        if s.name == "replica_http_requests_total" and route in (None, s.labels.get("route"))
    )


def settled_replica_requests(stack: Stack) -> float:
    """The request count once nothing is in flight any more (earlier examples' requests)."""
    last = replica_requests(stack)
    while True:
        time.sleep(0.1)
        now = replica_requests(stack)
        if now == last:
            return now
        last = now


def assert_gateway_sound(stack: Stack) -> None:
    """Alive, healthy, and no answer of its own was a 500."""
    assert stack.gateway.process.poll() is None, stack.gateway.log_text()[-3000:]
    health = httpx.get(f"http://{stack.ip}/health", headers={"host": DOMAIN}, timeout=5)
    assert health.status_code == 204, health.text
    metrics = httpx.get(f"http://{stack.ip}:9325/metrics", timeout=5).text
    fives = [
        s.key
        for s in parse_metrics(metrics, "ic-gateway")
        if s.name == "ic_gateway_http_total" and s.value > 0 and s.labels["status"] == "500"
    ]
    assert not fives, fives
    assert "internal error" not in stack.gateway.log_text()
    assert stack.faults.read_bytes() == stack.faults_content


# Request strategies.
def mostly(good: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`good` seven times in eight: each part of a request is odd now and then, not all at
    once, so that many requests get past the parser to the gateway and the replica."""
    # Not `roll == 0`: Hypothesis draws the smallest value far more often than 1 in 8.
    return st.integers(0, 7).flatmap(lambda roll: odd if roll == 5 else good)


ROUTES = [
    "/api/v2/status",
    "/health",
    f"/api/v2/canister/{CANISTER}/query",
    f"/api/v2/canister/{CANISTER}/call",
    f"/api/v3/canister/{CANISTER}/call",
    f"/api/v2/canister/{CANISTER}/read_state",
    f"/api/v3/subnet/{CANISTER}/query",
    f"/api/v4/subnet/{CANISTER}/call",
]
SEGMENTS = [
    "api", "v2", "v3", "v4", "v9", "status", "canister", "subnet", "query", "call",
    "read_state", "health", "metrics", "faults.json", "..", ".", "%2e%2e", "%2E", ".%2e",
    "%2f", "%2F..", "%00", "%", "%zz", "aaaaa-aa", CANISTER, "", "~", ";x", "*", "é", "a b",
]  # fmt: skip
METHODS = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "QUERY",
    "PROPFIND", "MKCOL", "PURGE", "M-SEARCH", "SOURCE", "PRI", "get", "FOO", "G\tET", "",
]  # fmt: skip
OTHER_HOSTS = ["elsewhere", "elsewhere:8080", "127.0.0.1:8080", "[::1]:80", "u:p@elsewhere"]


def paths(ip: str) -> st.SearchStrategy[str]:
    query = st.none() | st.sampled_from(["", "a=1", "a=%zz&b", "?", "x=" + "y" * 2000])
    built = st.tuples(st.lists(st.sampled_from(SEGMENTS), max_size=7), query).map(
        lambda t: "/" + "/".join(t[0]) + ("" if t[1] is None else "?" + t[1])
    )
    long = st.integers(1, 70_000).flatmap(
        lambda n: st.sampled_from(["/" + "a" * n, f"/api/v2/canister/{'a' * n}/query"])
    )
    return st.one_of(
        st.sampled_from(ROUTES),
        st.sampled_from(ROUTES),
        built,
        long,
        st.sampled_from(["/metrics", "/", f"/{ip}:9090/metrics", "//elsewhere/x", "*"]),
    )


def targets(ip: str) -> st.SearchStrategy[str]:
    hosts = st.sampled_from([*OTHER_HOSTS, f"{ip}:8080", f"{ip}:9090", DOMAIN])
    absolute = st.tuples(st.sampled_from(["http", "https", "HTTP", "ftp"]), hosts, paths(ip))
    return mostly(
        paths(ip),
        st.one_of(
            absolute.map(lambda t: f"{t[0]}://{t[1]}{t[2]}"),
            hosts,  # authority-form, as CONNECT uses it
            st.sampled_from(["", "api/v2/status", "http://", "http://elsewhere"]),
        ),
    )


def host_headers(ip: str) -> st.SearchStrategy[list[str]]:
    odd = st.sampled_from(
        [
            "GATEWAY.ICP", "gateway.icp.", "gateway.icp:80", "gateway.icp:8080", "gateway.icp:",
            "gateway.icp:x", "elsewhere", ip, f"{ip}:8080", "", "[::1]", "[gateway.icp]",
            "gateway.icp/evil", "gateway.icp@evil", "gateway.icp\t", "a" * 10_000, "[",
            "gateway.icp, elsewhere",
        ]
    )  # fmt: skip
    return mostly(st.just([DOMAIN]), st.lists(st.one_of(st.just(DOMAIN), odd), max_size=3))


good_header_names = st.sampled_from(
    [
        "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "Connection", "Upgrade", "Expect",
        "Content-Type", "Accept", "Proxy-Authorization", "TE", "Trailer", "X-Real-IP", "Cookie",
        "Keep-Alive",
    ]
) | st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)  # fmt: skip
odd_header_names = st.sampled_from(
    ["Transfer-Encoding", "Content-Length", "Host", "", " X", "X ", "X:Y", "\xe9", "X\x00"]
)
good_header_values = st.sampled_from(
    [
        "close", "keep-alive", "upgrade", "Upgrade", "websocket", "h2c", "100-continue",
        "application/cbor", "application/cbor", "text/plain", "1.2.3.4",
        "for=1.2.3.4;host=elsewhere", "\xff\x80", "",
    ]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)  # fmt: skip
odd_header_values = st.sampled_from(
    [
        "chunked", "gzip, chunked", "chunked, chunked", "identity", "0", "-1", "1e3",
        "a\x7fb", "a\x00b", "a\rb", " ",
    ]
)  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bytes]:
    """Framing headers and the bytes after the head: none, exact, mismatched Content-Length,
    chunked (valid, truncated, bad chunk sizes)."""
    content = draw(
        st.one_of(
            st.binary(max_size=64),
            st.just(bytes(cbor2.dumps({"content": {"request_type": "query"}}))),
            st.integers(0, 300_000).map(lambda n: b"x" * n),
        )
    )
    kind = draw(
        mostly(
            st.sampled_from(["none", "exact", "chunked"]),
            st.sampled_from(["mismatch", "truncated chunks", "bad chunks"]),
        )
    )
    if kind == "none":
        return [], b""
    if kind == "exact":
        return [("Content-Length", str(len(content)))], content
    if kind == "mismatch":
        declared = draw(st.integers(0, 2 * len(content) + 10).filter(lambda n: n != len(content)))
        return [("Content-Length", str(declared))], content
    cut = draw(st.lists(st.integers(0, len(content)), max_size=3, unique=True))
    pieces = [
        content[a:b] for a, b in zip([0, *sorted(cut)], [*sorted(cut), len(content)], strict=True)
    ]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    header = [("Transfer-Encoding", "chunked")]
    if kind == "chunked":
        return header, chunks
    if kind == "truncated chunks":
        return header, chunks[: draw(st.integers(0, len(chunks) - 1))]
    bad = draw(
        st.sampled_from(
            ["zz", "-1", "ffffffffffffffffffff", "1;ext=1", "1 ", " 1", "0x1", "", "\t", "+1"]
        )
    )
    tail = draw(st.sampled_from([b"\r\nx\r\n0\r\n\r\n", b"\r\n", b"", b"\nx\n0\n\n"]))
    return header, bad.encode() + tail


@dataclass(frozen=True)
class RawRequest:
    method: str
    target: str
    version: str
    hosts: list[str]
    headers: list[tuple[str, str]]
    framing: list[tuple[str, str]]
    body: bytes
    newline: bytes
    cut: int | None
    """How many bytes to leave off the end (None: send it all)."""

    def encode(self) -> bytes:
        nl = self.newline
        head = [f"{self.method} {self.target} {self.version}".rstrip(" ").encode("utf-8")]
        head += [b"Host: " + h.encode("latin-1", "replace") for h in self.hosts]
        head += [f"{k}: {v}".encode("latin-1", "replace") for k, v in self.headers]
        head += [f"{k}: {v}".encode() for k, v in self.framing]
        data = nl.join(head) + nl + nl + self.body
        return data if self.cut is None else data[: max(0, len(data) - self.cut)]

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


@st.composite
def raw_requests(draw: st.DrawFn, ip: str) -> RawRequest:
    framing, body = draw(bodies())
    header = st.tuples(
        mostly(good_header_names, odd_header_names), mostly(good_header_values, odd_header_values)
    )
    big = st.integers(1, 300_000).map(lambda n: [("X-Big", "b" * n)])
    versions = st.sampled_from(["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/1.1 x", "http/1.1", ""])
    return RawRequest(
        method=draw(mostly(st.sampled_from(METHODS[:6]), st.sampled_from(METHODS[6:]))),
        target=draw(targets(ip)),
        version=draw(mostly(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]), versions)),
        hosts=draw(host_headers(ip)),
        headers=draw(mostly(st.lists(header, max_size=3), big)),
        framing=framing,
        body=body,
        newline=draw(mostly(st.just(b"\r\n"), st.just(b"\n"))),
        cut=draw(mostly(st.none(), st.integers(1, 200))),
    )


# The properties.
def test_anything_sent_is_answered_without_5xx_and_4xx_say_why(stack: Stack) -> None:
    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw_requests(stack.ip))
    @example(RawRequest("GET", "/health", "HTTP/1.1", [DOMAIN, DOMAIN], [], [], b"", b"\r\n", None))
    @example(
        RawRequest(
            "POST",
            f"/api/v2/canister/{CANISTER}/query",
            "HTTP/1.1",
            [DOMAIN],
            [("Content-Type", "application/cbor")],
            [("Transfer-Encoding", "chunked")],
            b"5\r\nabc",
            b"\r\n",
            None,
        )
    )
    @example(RawRequest("CONNECT", f"{stack.ip}:8080", "HTTP/1.1", [], [], [], b"", b"\r\n", None))
    def prop(request: RawRequest) -> None:
        data = request.encode()
        result = exchange(stack.ip, data, request.head)
        event(f"answers {[r.status for r in result.final]}" if result.final else "no answer")
        check_answers(stack, result, data, request.head)

    prop()
    assert_gateway_sound(stack)


def test_absolute_form_requests_to_other_hosts_are_never_forwarded(stack: Stack) -> None:
    before = settled_replica_requests(stack)
    others = st.sampled_from([*OTHER_HOSTS, f"{stack.ip}:8080", f"{stack.ip}:9090"])

    @settings(max_examples=30, deadline=None)
    @given(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
        st.sampled_from(["http", "https"]),
        others,
        st.sampled_from([*ROUTES, "/", "/metrics"]),
        st.sampled_from([[DOMAIN], [], ["elsewhere"]]),
    )
    def absolute(method: str, scheme: str, host: str, path: str, hosts: list[str]) -> None:
        body = b"" if method in ("GET", "HEAD") else bytes(cbor2.dumps({}))
        lines = [f"{method} {scheme}://{host}{path} HTTP/1.1", *(f"Host: {h}" for h in hosts)]
        lines += ["Content-Type: application/cbor", f"Content-Length: {len(body)}"]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        result = exchange(stack.ip, data, method == "HEAD", ANSWER_TIMEOUT)
        check_answers(stack, result, data, method == "HEAD")
        assert [r.status for r in result.final] == [400], result
        if method != "HEAD":
            assert b"not a forward proxy" in result.final[0].body
        assert replica_requests(stack) == before, f"{data!r} reached the replica"

    @settings(max_examples=10, deadline=None)
    @given(others, st.sampled_from([[DOMAIN], [], ["elsewhere:443"]]))
    def connect(host: str, hosts: list[str]) -> None:
        lines = [f"CONNECT {host} HTTP/1.1", *(f"Host: {h}" for h in hosts)]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        result = exchange(stack.ip, data, timeout=ANSWER_TIMEOUT)
        check_answers(stack, result, data, False)
        assert [r.status for r in result.final] == [405], result
        assert replica_requests(stack) == before, f"{data!r} reached the replica"

    absolute()
    connect()
    assert_gateway_sound(stack)


def test_replica_metrics_dashboard_and_faults_are_not_reachable(stack: Stack) -> None:
    name = stack.faults.name

    @settings(max_examples=40, deadline=None)
    @given(
        st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
        st.sampled_from(
            [
                "/metrics",
                "/",
                "/metrics/",
                "//metrics",
                "/%6detrics",
                "/METRICS",
                "/./metrics",
                "/api/../metrics",
                "/api/v2/status/../../../metrics",
                "/api/v2/metrics",
                "/dashboard",
                "/faults",
                f"/{name}",
                f"/faults/{name}",
                str(stack.faults),
                "/api/v2/canister/x/../../../../metrics",
                "/api/v2/canister/%2e%2e%2f%2e%2e%2f%2e%2e%2fmetrics/query",
                "/api/v2/status%2f..%2f..%2f..%2fmetrics",
            ]
        ),
    )
    def unreachable(method: str, path: str) -> None:
        data = f"{method} {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 0\r\n\r\n"
        result = exchange(stack.ip, data.encode(), method == "HEAD", ANSWER_TIMEOUT)
        check_answers(stack, result, data.encode(), method == "HEAD")
        assert [r.status for r in result.final] == [404], (path, result)
        body = result.final[0].body
        assert b"# HELP" not in body and b"replica_http" not in body, body

    unreachable()
    assert_gateway_sound(stack)


def test_nothing_sent_through_the_gateway_changes_the_replicas_faults(stack: Stack) -> None:
    def critical_errors() -> float:
        text = httpx.get(stack.replica_metrics_url, timeout=5).text
        samples = parse_metrics(text, "replica")
        return sum(s.value for s in samples if s.name.startswith("critical_errors"))

    errors_before = critical_errors()
    knobs = st.fixed_dictionaries(
        {},
        optional={
            "unhealthy": st.just(True),
            "fail_at_start": st.just(3),
            "delay_seconds": st.just(30),
            "critical_errors": st.just(7),
        },
    )

    @settings(max_examples=30, deadline=None)
    @given(
        st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]),
        st.sampled_from(
            [
                "/faults",
                f"/{stack.faults.name}",
                str(stack.faults),
                "/api/v2/faults",
                "/",
                "/metrics",
                f"/api/v2/canister/{CANISTER}/call",
                f"/api/v3/canister/{CANISTER}/call",
            ]
        ),
        knobs,
        st.sampled_from(["application/json", "application/cbor"]),
    )
    def write_faults(method: str, path: str, faults: dict[str, object], kind: str) -> None:
        body = bytes(cbor2.dumps(faults)) if kind.endswith("cbor") else repr(faults).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Type: {kind}\r\n"
        data = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        check_answers(stack, exchange(stack.ip, data, timeout=ANSWER_TIMEOUT), data, False)
        assert stack.faults.read_bytes() == stack.faults_content

    write_faults()
    time.sleep(0.2)  # the replica re-reads its faults file at most every 100 ms
    status = httpx.get(f"http://{stack.ip}:8080/api/v2/status", timeout=5)
    assert status.status_code == 200
    assert b"healthy" in status.content
    assert critical_errors() == errors_before
    assert_gateway_sound(stack)


def test_the_gateway_forwards_only_paths_it_routes(stack: Stack) -> None:
    @settings(max_examples=10, deadline=None)
    @given(
        st.sampled_from([".", ".."]),
        st.sampled_from(["v2/canister/{}/query", "v3/canister/{}/call", "v2/subnet/{}/read_state"]),
    )
    @example("..", "v2/canister/{}/query")
    def forwarded(principal: str, route: str) -> None:
        before = replica_requests(stack, route="other")
        body = bytes(cbor2.dumps({}))
        data = (
            f"POST /api/{route.format(principal)} HTTP/1.1\r\nHost: {DOMAIN}\r\n"
            f"Content-Type: application/cbor\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        check_answers(stack, exchange(stack.ip, data, timeout=ANSWER_TIMEOUT), data, False)
        assert replica_requests(stack, route="other") == before, "forwarded off-route"

    forwarded()


def test_the_gateway_is_sound_after_everything(stack: Stack) -> None:
    assert_gateway_sound(stack)


# Published ports of a local-backend testnet.
def test_a_local_testnets_published_ports_are_all_on_loopback() -> None:
    run = Run.create()
    try:
        topology = InternetComputer().add_subnet(
            Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway()
        )
        testnet = Testnet(topology, run).start(timeout=60)
        try:
            processes = tagged_processes().get(run.run_id, [])
            assert processes
            listening: list[tuple[str, str, int]] = []
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    for conn in process.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN or (
                            conn.type == socket.SOCK_DGRAM and not conn.raddr
                        ):
                            listening.append((process.name(), conn.laddr.ip, conn.laddr.port))
            ports = {port for _, _, port in listening}
            assert {8080, 9090, 9091, 7070} <= ports, listening
            assert ports & {80, 8880}, listening
            outside = [
                entry for entry in listening if not ipaddress.ip_address(entry[1]).is_loopback
            ]
            assert not outside, f"listening beyond loopback: {outside}"
            assert all(ipaddress.ip_address(ip).version == 4 for _, ip, _ in listening)
            assert all(ip.startswith("127.") for _, ip, _ in listening), listening
        finally:
            testnet.close()
    finally:
        run.close()
