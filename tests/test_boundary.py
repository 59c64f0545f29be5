"""ic-boundary: routing to healthy replicas, registry changes, Host checks, metrics, shutdown.

The replicas are fakes served by uvicorn in a background thread (one server per group, each
replica on its own loopback address, port 8080): they answer `/api/v2/status` with a health
the test controls and record every other request they get.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import Program
from prometheus_client.parser import text_string_to_metric_families
from raw_http import HANG_UP, RESET, SILENCE, Answer, RawServer

from harness.node.boundary.app import host_allowed
from harness.node.boundary.config import StaticUpstream, load_config, parse_upstreams
from harness.node.boundary.health import probe
from harness.node.boundary.routing import Replica, Route, RouteMismatch, Target, match_route
from harness.node.boundary.routing import subnet_for_canister as rule
from harness.node.boundary.upstream import (
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
    forward,
    make_client,
)
from harness.node.registry import LocalStore, NodeRecord, RegistrySnapshot, SubnetRecord, SubnetType
from harness.node.retry import Failure
from harness.node.settings import ConfigError, parse_duration
from harness.node.status import CONTENT_TYPE_CBOR, StatusResponse, decode_status, encode_status

DOMAIN = "api0.boundary.test"
MODULE = "harness.node.boundary"
REPLICA_PORT = 8080


# Fake replicas.
@dataclass(frozen=True)
class Seen:
    """One request a fake replica got."""

    replica: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeReplicas:
    """Fake replicas on `ips`, all served by one uvicorn server."""

    ips: list[str]
    health: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def url(self, ip: str) -> str:
        return f"http://{ip}:{REPLICA_PORT}"

    def served_by(self) -> list[str]:
        return [s.replica for s in self.seen]

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        ip = scope["server"][0]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["path"] == "/api/v2/status":
            status = StatusResponse(
                ic_api_version="0.18.0",
                impl_version=f"fake-{ip}",
                replica_health_status=self.health.get(ip, "healthy"),
            )
            await _respond(
                send, 200, encode_status(status), [(b"content-type", b"application/cbor")]
            )
            return
        target = scope["raw_path"].decode() + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        self.seen.append(Seen(ip, scope["method"], target, headers, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        extra = [
            (b"content-type", b"application/cbor"),
            (b"x-replica", ip.encode()),
            (b"keep-alive", b"timeout=5"),
            (b"connection", b"x-private"),
            (b"x-private", b"hop-by-hop by Connection"),
        ]
        answer = f"{ip} {len(body)}".encode()
        await _respond(send, int(headers.get("x-want-status", "200")), answer, extra)

    def start(self) -> None:
        sockets = [socket.create_server((ip, REPLICA_PORT)) for ip in self.ips]
        config = uvicorn.Config(
            self.app, interface="asgi3", lifespan="off", log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets}, daemon=True
        )
        self.thread.start()
        wait_until(lambda: self.server is not None and self.server.started, "fake replicas up")

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)
            assert not self.thread.is_alive(), "fake replicas did not stop"
            self.server = None


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def fake_replicas(make_loopback_ip: Callable[[], str]) -> Iterator[Callable[[int], FakeReplicas]]:
    """Start `n` fake replicas (one server) on fresh loopback addresses; stopped at the end."""
    groups: list[FakeReplicas] = []

    def start(n: int) -> FakeReplicas:
        group = FakeReplicas([make_loopback_ip() for _ in range(n)])
        groups.append(group)
        group.start()
        return group

    yield start
    for group in groups:
        group.stop()


# Helpers.
def wait_until(check: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.02)


def node_id(ip: str) -> str:
    return f"node-{ip}"


def snapshot(
    version: int, subnets: dict[str, list[str]], extra_nodes: Sequence[str] = ()
) -> RegistrySnapshot:
    ips = [ip for members in subnets.values() for ip in members] + list(extra_nodes)
    return RegistrySnapshot(
        version=version,
        subnets={
            sid: SubnetRecord(SubnetType.APPLICATION, tuple(map(node_id, members)), "1.0.0")
            for sid, members in subnets.items()
        },
        nodes={node_id(ip): NodeRecord(ip, http_port=REPLICA_PORT) for ip in ips},
    )


@dataclass
class Boundary:
    """A running ic-boundary and clients for its two addresses."""

    program: Program
    ip: str

    @property
    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.ip}:443", headers={"host": DOMAIN}, timeout=10)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = httpx.get(f"http://{self.ip}:9324/metrics", timeout=5).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def wait_healthy(self, subnet: str, count: int) -> None:
        wait_until(
            lambda: self.metric("ic_boundary_healthy_replicas", subnet=subnet) == count,
            f"{count} healthy replica(s) in {subnet}\n{self.program.log_text()}",
        )


@pytest.fixture
def boundary(start_program: Callable[..., Program], loopback_ip: str) -> Callable[..., Boundary]:
    def start(*args: str, env: dict[str, str] | None = None) -> Boundary:
        program = start_program(
            MODULE,
            "--tls-hostname",
            DOMAIN,
            "--listen-http-addr",
            f"{loopback_ip}:443",
            "--obs-metrics-addr",
            f"{loopback_ip}:9324",
            "--health-check-interval",
            "100ms",
            *args,
            env=env,
            ready_url=f"http://{loopback_ip}:9324/metrics",
        )
        return Boundary(program, loopback_ip)

    return start


def with_registry(tmp_path: Path, snap: RegistrySnapshot) -> tuple[LocalStore, list[str]]:
    store = LocalStore(tmp_path / "registry")
    store.write(snap)
    return store, [
        "--registry-local-store-path",
        str(store.path),
        "--registry-poll-interval",
        "100ms",
    ]


def canister_in(subnet: str, subnets: list[str]) -> str:
    """A canister id the documented rule puts on `subnet`."""
    return next(c for c in (f"canister-{i}" for i in range(1000)) if rule(c, subnets) == subnet)


# Unit tests of the pure parts.
def test_canister_rule_is_pinned_and_moves_only_to_a_new_subnet() -> None:
    # sha256("s-a/rwlgt-...") = 6b33c94f..., "s-b/..." = abe83caf..., "s-c/..." = f67f0d42...
    assert rule("rwlgt-iiaaa-aaaaa-aaaaa-cai", ["s-a", "s-b", "s-c"]) == "s-c"
    # d72ad0a1... (s-a) > 9c9d18fc... (s-c) > 6ac96964... (s-b)
    assert rule("ryjl3-tyaaa-aaaaa-aaaba-cai", ["s-a", "s-b", "s-c"]) == "s-a"
    assert rule("ryjl3-tyaaa-aaaaa-aaaba-cai", ["s-b", "s-c"]) == "s-c"
    assert rule("canister-1", ["s-b", "s-a"]) == rule("canister-1", ["s-a", "s-b"])
    assert rule("x", []) is None
    canisters = [f"c{i}" for i in range(200)]
    before = {c: rule(c, ["s-a", "s-b"]) for c in canisters}
    after = {c: rule(c, ["s-a", "s-b", "s-c"]) for c in canisters}
    moved = {before[c] for c in canisters if before[c] != after[c]}
    assert {after[c] for c in canisters if before[c] != after[c]} == {"s-c"}
    assert moved <= {"s-a", "s-b"}
    assert sorted(set(before.values())) == ["s-a", "s-b"]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v2/status", Route(Target.ANY, "status")),
        ("GET", "/health", Route(Target.HEALTH, "health")),
        ("POST", "/api/v2/canister/aaa/query", Route(Target.CANISTER, "query", "aaa")),
        ("POST", "/api/v3/canister/aaa/read_state", Route(Target.CANISTER, "read_state", "aaa")),
        ("POST", "/api/v4/canister/aaa/call", Route(Target.CANISTER, "call", "aaa")),
        ("POST", "/api/v2/subnet/s1/read_state", Route(Target.SUBNET, "read_state", "s1")),
        ("POST", "/api/v3/subnet/s1/query", Route(Target.SUBNET, "query", "s1")),
        ("POST", "/api/v4/subnet/s1/call", Route(Target.SUBNET, "call", "s1")),
        (
            "POST",
            "/api/v4/canister/aaa/query",
            RouteMismatch(404, "no route for /api/v4/canister/aaa/query"),
        ),
        (
            "POST",
            "/api/v2/subnet/s1/query",
            RouteMismatch(404, "no route for /api/v2/subnet/s1/query"),
        ),
        (
            "POST",
            "/api/v2/canister//query",
            RouteMismatch(404, "no route for /api/v2/canister//query"),
        ),
        ("GET", "/", RouteMismatch(404, "no route for /")),
        ("POST", "/api/v2/status", RouteMismatch(405, "/api/v2/status takes GET, not POST", "GET")),
        (
            "GET",
            "/api/v3/canister/a/call",
            RouteMismatch(405, "/api/v3/canister/a/call takes POST, not GET", "POST"),
        ),
    ],
)
def test_match_route(method: str, path: str, expected: Route | RouteMismatch) -> None:
    assert match_route(method, path) == expected


def test_parse_duration_and_upstreams() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("3") == 3.0
    assert parse_duration("1h") == 3600.0
    for bad in ("", "-1s", "0", "fast"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    assert parse_upstreams("a=http://127.0.0.1:8080/, b=http://[::1]:80") == (
        StaticUpstream("a", "http://127.0.0.1:8080"),
        StaticUpstream("b", "http://[::1]:80"),
    )
    with pytest.raises(ConfigError, match="'http://h' is not an http://HOST:PORT URL"):
        parse_upstreams("a=http://h")
    with pytest.raises(ConfigError, match="expected SUBNET_ID=http://HOST:PORT"):
        parse_upstreams("http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("host", "local_ip", "allowed"),
    [
        (DOMAIN, "127.1.2.3", True),
        (f"{DOMAIN.upper()}:443", "127.1.2.3", True),
        (f"{DOMAIN}.", None, True),
        ("127.1.2.3:443", "127.1.2.3", True),
        ("127.1.2.3", "::ffff:127.1.2.3", True),
        ("[::1]:443", "::1", True),
        ("127.1.2.4", "127.1.2.3", False),
        ("other.test", "127.1.2.3", False),
        (f"x.{DOMAIN}", "127.1.2.3", False),
    ],
)
def test_host_allowed(host: str, local_ip: str | None, allowed: bool) -> None:
    assert host_allowed(host, DOMAIN, local_ip) is allowed


# The program.
def test_status_goes_to_a_healthy_replica(
    tmp_path: Path, fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(2)
    r1, r2 = replicas.ips
    replicas.health[r2] = "starting"
    _, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1], "s-b": [r2]}))
    bn = boundary(*args)
    bn.wait_healthy("s-a", 1)
    bn.wait_healthy("s-b", 0)
    with bn.api as api:
        for _ in range(3):
            response = api.get("/api/v2/status")
            assert response.status_code == 200
            assert response.headers["content-type"] == CONTENT_TYPE_CBOR
            status = decode_status(response.content)
            assert (status.impl_version, status.replica_health_status) == (f"fake-{r1}", "healthy")
        assert api.get("/health").status_code == 204


def test_canister_calls_follow_the_rule_and_round_robin(
    tmp_path: Path, fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(3)
    r1, r2, r3 = replicas.ips
    _, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1, r2], "s-b": [r3]}))
    bn = boundary(*args)
    bn.wait_healthy("s-a", 2)
    bn.wait_healthy("s-b", 1)
    on_a, on_b = canister_in("s-a", ["s-a", "s-b"]), canister_in("s-b", ["s-a", "s-b"])
    with bn.api as api:
        paths = [f"/api/v2/canister/{on_a}/query", f"/api/v3/canister/{on_a}/call"] * 2
        answers = [api.post(p, content=b"cbor-envelope") for p in paths]
        assert [a.status_code for a in answers] == [200, 200, 200, 200]
        assert replicas.served_by() in ([r1, r2, r1, r2], [r2, r1, r2, r1])
        assert [a.content for a in answers] == [f"{ip} 13".encode() for ip in replicas.served_by()]
        replicas.seen.clear()

        # ic-boundary forwards the client's headers and adds none of an HTTP client's defaults.
        for name in ("accept-encoding", "user-agent", "accept"):
            del api.headers[name]
        response = api.post(
            f"/api/v4/canister/{on_b}/call?x=1",
            content=b"body",
            headers={"x-want-status": "202", "x-custom": "kept", "te": "trailers"},
        )
        assert (response.status_code, response.content) == (202, f"{r3} 4".encode())
        assert response.headers["x-replica"] == r3
        assert "keep-alive" not in response.headers
        assert "x-private" not in response.headers
        assert response.headers["content-type"] == "application/cbor"
        (seen,) = replicas.seen
        assert (seen.method, seen.target, seen.body) == (
            "POST",
            f"/api/v4/canister/{on_b}/call?x=1",
            b"body",
        )
        assert seen.headers["x-custom"] == "kept"
        assert "te" not in seen.headers
        assert seen.headers["host"] == f"{r3}:{REPLICA_PORT}"
        assert not {"accept-encoding", "user-agent", "accept", "content-type"} & set(seen.headers)


def test_unhealthy_replicas_are_avoided_and_none_healthy_is_503(
    tmp_path: Path,
    fake_replicas: Callable[[int], FakeReplicas],
    boundary: Callable[..., Boundary],
    make_loopback_ip: Callable[[], str],
) -> None:
    replicas = fake_replicas(2)
    r1, r2 = replicas.ips
    nothing_listens = make_loopback_ip()
    replicas.health[r2] = "certified_state_behind"
    _, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1, r2, nothing_listens]}))
    bn = boundary(*args)
    bn.wait_healthy("s-a", 1)
    canister = canister_in("s-a", ["s-a"])
    with bn.api as api:
        for _ in range(4):
            assert api.post(f"/api/v2/canister/{canister}/query").status_code == 200
        assert replicas.served_by() == [r1] * 4

        replicas.health[r1] = "waiting_for_certified_state"
        bn.wait_healthy("s-a", 0)
        response = api.post(f"/api/v2/canister/{canister}/query")
        assert (response.status_code, response.text) == (
            503,
            "no healthy replica for subnet s-a\n",
        )
        assert response.headers["access-control-allow-origin"] == "*"
        assert api.get("/api/v2/status").status_code == 503
        assert api.get("/health").status_code == 503

        replicas.health[r2] = "healthy"
        bn.wait_healthy("s-a", 1)
        assert api.get("/health").status_code == 204
        assert api.post(f"/api/v2/canister/{canister}/query").headers["x-replica"] == r2


def test_a_starting_replica_is_routed_to_long_before_the_next_interval(
    tmp_path: Path,
    fake_replicas: Callable[[int], FakeReplicas],
    boundary: Callable[..., Boundary],
) -> None:
    """While a replica is unhealthy the probes come sooner than `--health-check-interval`
    (a testnet's replicas start after its boundary node: routing waits for them, not for an
    interval)."""
    replicas = fake_replicas(1)
    (r1,) = replicas.ips
    replicas.health[r1] = "waiting_for_certified_state"
    _, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1]}))
    bn = boundary(*args, "--health-check-interval", "30s")  # the later flag wins
    bn.wait_healthy("s-a", 0)
    time.sleep(0.5)  # several back-off rounds pass: the next must still come well before 30 s
    replicas.health[r1] = "healthy"
    started = time.monotonic()
    bn.wait_healthy("s-a", 1)
    assert time.monotonic() - started < 5


def test_subnet_routes_and_request_errors(
    tmp_path: Path, fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(2)
    r1, r2 = replicas.ips
    _, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1], "s-b": [r2]}))
    bn = boundary(*args)
    bn.wait_healthy("s-b", 1)
    with bn.api as api:
        for path in ("/api/v2/subnet/s-b/read_state", "/api/v3/subnet/s-b/query"):
            assert api.post(path).headers["x-replica"] == r2
        assert api.post("/api/v4/subnet/s-a/call").headers["x-replica"] == r1
        response = api.post("/api/v3/subnet/s-zzz/read_state")
        assert (response.status_code, response.text) == (404, "subnet s-zzz not found\n")
        response = api.post("/api/v2/subnet/s-b/query")
        assert (response.status_code, response.text) == (
            404,
            "no route for /api/v2/subnet/s-b/query\n",
        )
        assert api.get("/api/v1/status").status_code == 404
        response = api.get("/api/v2/subnet/s-b/read_state")
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        assert api.post("/api/v2/status").status_code == 405

        limit = 5 * 1024 * 1024
        response = api.post("/api/v2/subnet/s-a/read_state", content=b"x" * (limit + 1))
        assert (response.status_code, response.text) == (
            413,
            f"request body is larger than {limit} bytes\n",
        )
        response = api.post("/api/v2/subnet/s-a/read_state", content=b"x" * limit)
        assert (response.status_code, response.content) == (200, f"{r1} {limit}".encode())


def test_registry_changes_are_picked_up(
    tmp_path: Path, fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(3)
    r1, r2, r3 = replicas.ips
    store, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1, r2]}, extra_nodes=[r3]))
    bn = boundary(*args)
    bn.wait_healthy("s-a", 2)
    assert bn.metric("ic_boundary_registry_version") == 1
    with bn.api as api:
        assert api.post("/api/v2/subnet/s-b/read_state").status_code == 404

        # Version 2 adds subnet s-b and removes r2 from s-a.
        store.write(snapshot(2, {"s-a": [r1], "s-b": [r3]}, extra_nodes=[r2]))
        # Two 100 ms poll intervals and one probe round when the machine is idle; under -n 4
        # on 2 cores a wall-clock bound would measure the machine, not ic-boundary.
        wait_until(
            lambda: api.post("/api/v2/subnet/s-b/read_state").status_code == 200,
            "s-b served",
            timeout=15,
        )
        assert bn.metric("ic_boundary_registry_version") == 2
        assert bn.metric("ic_boundary_replicas", subnet="s-a") == 1
        replicas.seen.clear()
        for _ in range(4):
            assert api.post("/api/v2/subnet/s-a/read_state").status_code == 200
        assert replicas.served_by() == [r1] * 4

        # A corrupt version 3 is skipped; version 2 stays in use until a good version 4.
        (store.path / "00000000000000000003.json").write_text("{not json")
        wait_until(lambda: bn.metric("ic_boundary_registry_errors_total") == 1, "error counted")
        assert bn.metric("ic_boundary_registry_version") == 2
        assert api.post("/api/v2/subnet/s-b/read_state").headers["x-replica"] == r3
        store.write(snapshot(4, {"s-a": [r1, r2]}, extra_nodes=[r3]))
        wait_until(lambda: bn.metric("ic_boundary_registry_version") == 4, "version 4")
        assert api.post("/api/v2/subnet/s-b/read_state").status_code == 404
        assert bn.metric("ic_boundary_replicas", subnet="s-b") is None
    assert "registry version 3 is unusable" in bn.program.log_text()


def test_static_upstreams_from_the_environment(
    fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(3)
    r1, r2, r3 = replicas.ips
    upstreams = f"s-x={replicas.url(r1)}, s-x={replicas.url(r2)}, s-y={replicas.url(r3)}"
    # LISTEN_HTTPS_PORT and TLS_CERT_PATH come from the IC's env file and are ignored.
    bn = boundary(
        env={"UPSTREAMS": upstreams, "LISTEN_HTTPS_PORT": "443", "TLS_CERT_PATH": "/nope"}
    )
    bn.wait_healthy("s-x", 2)
    bn.wait_healthy("s-y", 1)
    assert bn.metric("ic_boundary_registry_version") == 0
    on_y = canister_in("s-y", ["s-x", "s-y"])
    with bn.api as api:
        assert api.post(f"/api/v2/canister/{on_y}/read_state").headers["x-replica"] == r3
        served = [api.post("/api/v3/subnet/s-x/query").headers["x-replica"] for _ in range(4)]
        assert sorted(served) == sorted([r1, r2, r1, r2])


def test_host_validation(
    fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(1)
    bn = boundary("--upstreams", f"s-x={replicas.url(replicas.ips[0])}")
    bn.wait_healthy("s-x", 1)
    url = f"http://{bn.ip}:443/health"
    for host, status in [
        (DOMAIN, 204),
        (f"{DOMAIN}:443", 204),
        (f"{bn.ip}:443", 204),
        ("other.test", 400),
        ("127.0.0.1:443", 400),
    ]:
        response = httpx.get(url, headers={"host": host})
        assert response.status_code == status, host
    response = httpx.get(f"http://{bn.ip}:443/api/v2/status", headers={"host": "evil.test"})
    assert (response.status_code, response.text) == (400, "Unknown Domain: evil.test\n")
    with socket.create_connection((bn.ip, 443), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.endswith(b"\r\n\r\nMissing Authority\n")


def test_metrics(
    tmp_path: Path, fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(2)
    r1, r2 = replicas.ips
    _, args = with_registry(tmp_path, snapshot(1, {"s-a": [r1, r2], "s-b": []}))
    bn = boundary(*args)
    bn.wait_healthy("s-a", 2)
    with bn.api as api:
        for _ in range(3):
            api.post("/api/v2/subnet/s-a/read_state", headers={"x-want-status": "202"})
        api.post("/api/v2/subnet/s-b/read_state")
        api.get("/nowhere")
        api.get("/api/v2/status")
        api.get("/health")

    def requests(method: str, request_type: str, status: int, subnet: str) -> float | None:
        return bn.metric(
            "ic_boundary_requests_total",
            method=method,
            request_type=request_type,
            status=str(status),
            subnet=subnet,
        )

    assert requests("POST", "read_state", 202, "s-a") == 3
    assert requests("POST", "read_state", 503, "s-b") == 1
    assert requests("GET", "unknown", 404, "none") == 1
    assert requests("GET", "status", 200, "s-a") == 1
    assert requests("GET", "health", 204, "none") == 1
    duration = "ic_boundary_request_duration_seconds_count"
    assert bn.metric(duration, method="POST", request_type="read_state", subnet="s-a") == 3
    assert bn.metric("ic_boundary_healthy_replicas", subnet="s-a") == 2
    assert bn.metric("ic_boundary_healthy_replicas", subnet="s-b") == 0
    assert bn.metric("ic_boundary_replicas", subnet="s-a") == 2
    assert bn.metric("ic_boundary_registry_version") == 1
    assert bn.metric("ic_boundary_registry_errors_total") == 0
    assert httpx.get(f"http://{bn.ip}:9324/other").status_code == 404


def test_unreachable_replica_is_skipped_and_slow_one_times_out(
    fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    first, second = fake_replicas(1), fake_replicas(1)
    r1, r2 = first.ips[0], second.ips[0]
    bn = boundary(
        "--upstreams",
        f"s-x={first.url(r1)},s-x={second.url(r2)}",
        "--health-check-interval",
        "60s",
        "--upstream-timeout",
        "300ms",
    )
    bn.wait_healthy("s-x", 2)
    second.stop()
    with bn.api as api:
        served = [api.post("/api/v3/subnet/s-x/query").headers["x-replica"] for _ in range(2)]
        assert served == [r1, r1]
        assert bn.metric("ic_boundary_upstream_errors_total", subnet="s-x", error="connect") == 1
        assert bn.metric("ic_boundary_healthy_replicas", subnet="s-x") == 1

        first.delay = 1.0
        response = api.post("/api/v3/subnet/s-x/query")
        assert response.status_code == 504
        assert response.text.startswith(f"replica {first.url(r1)} failed: ")
        assert bn.metric("ic_boundary_upstream_errors_total", subnet="s-x", error="timeout") == 1


def test_429_and_5xx_answers_go_to_the_next_replica_other_answers_do_not(
    fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(3)
    bn = boundary("--upstreams", ",".join(f"s-x={replicas.url(ip)}" for ip in replicas.ips))
    bn.wait_healthy("s-x", 3)
    with bn.api as api:
        for status in (503, 429):
            replicas.seen.clear()
            response = api.post("/api/v3/subnet/s-x/query", headers={"x-want-status": str(status)})
            # Every healthy replica of the pool once; the last one's answer is the client's.
            assert response.status_code == status
            assert sorted(replicas.served_by()) == sorted(replicas.ips)
            assert response.headers["x-replica"] == replicas.served_by()[-1]
        replicas.seen.clear()
        response = api.post("/api/v3/subnet/s-x/query", headers={"x-want-status": "404"})
        assert response.status_code == 404
        assert len(replicas.seen) == 1
    # An answer is no failure to forward: every replica stays healthy, no upstream error counted.
    assert bn.metric("ic_boundary_healthy_replicas", subnet="s-x") == 3
    for error in ("connect", "timeout", "other"):
        assert bn.metric("ic_boundary_upstream_errors_total", subnet="s-x", error=error) is None
    requests = "ic_boundary_requests_total"
    assert bn.metric(requests, method="POST", request_type="query", status="503", subnet="s-x") == 1


# `forward` and `probe` on their own, against raw TCP stand-ins for a replica.
def send(
    replica: RawServer,
    method: str = "POST",
    target: str = "/api/v2/subnet/s/read_state",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"x",
    timeout: float = 5.0,
) -> UpstreamResponse:
    """Forward one request to `replica` through a fresh client; `replica` is closed after."""

    async def run() -> UpstreamResponse:
        async with make_client(timeout) as client:
            return await forward(client, replica.url, method, target, headers, body)

    try:
        return asyncio.run(run())
    finally:
        replica.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: 2\r\n\r\nok"


def test_forward_sends_the_request_as_given_and_returns_the_answer_as_received() -> None:
    answer = (
        b"HTTP/1.1 202 Accepted\r\nContent-Encoding: gzip\r\nX-Twice: 1\r\nx-twice: 2\r\n"
        b"Connection: x-hop\r\nX-Hop: 1\r\nDate: then\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x00\x00"
    )
    replica = RawServer([answer])
    response = send(
        replica,
        "POST",
        "/api/v2/canister/a%2Fb/call?x=%41&y",
        [(b"Host", b"api.test"), (b"X-Utf8", "café".encode()), (b"X-Latin1", b"caf\xe9"),
         (b"Connection", b"x-drop"), (b"X-Drop", b"1"), (b"Content-Type", b"application/cbor")],
        b"body",
    )  # fmt: skip
    (request,) = replica.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    # The target exactly as the client sent it; the replica's own Host; the client's headers,
    # hop-by-hop ones dropped, their values byte for byte (one that is no UTF-8 too).
    assert lines[0] == b"POST /api/v2/canister/a%2Fb/call?x=%41&y HTTP/1.1"
    assert lines[1:] == [
        f"host: 127.0.0.1:{replica.port}".encode(),
        b"x-utf8: caf\xc3\xa9",
        b"x-latin1: caf\xe9",
        b"content-type: application/cbor",
        b"content-length: 4",
    ]
    assert body == b"body"
    assert response == UpstreamResponse(
        202,
        [(b"content-encoding", b"gzip"), (b"x-twice", b"1"), (b"x-twice", b"2")],
        b"\x1f\x8b\x00\x00",  # not decompressed
    )


def test_forward_sends_a_zero_length_with_an_empty_post_and_none_with_a_get() -> None:
    for method, length in [("POST", [b"content-length: 0"]), ("GET", [])]:
        replica = RawServer([OK])
        send(replica, method, body=b"")
        (request,) = replica.requests
        host = f"host: 127.0.0.1:{replica.port}".encode()
        assert request.split(b"\r\n")[1:] == [host, *length, b"", b""]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\ncontent-len",
            "broken answer: closed it half-way (it had sent b'HTTP/1.1 200 OK",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
            "broken answer: closed it half-way, after 10 of the 100 bytes its content-length "
            "header announced",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", "broken answer: * HTTP/*NOT HTTP AT ALL"),
        (RESET, "connection lost: Connection reset by peer"),
    ],
    ids=["head-cut-short", "body-cut-short", "garbage", "reset"],
)
def test_forward_a_broken_exchange_is_502_other(answer: Answer, reason: str) -> None:
    replica = RawServer([answer])
    with pytest.raises(UpstreamError) as raised:
        send(replica)
    error = raised.value
    assert type(error) is UpstreamError
    assert not error.failure.retryable  # the replica may have processed it
    assert (error.kind, error.status) == ("other", 502)
    assert fnmatch.fnmatchcase(error.reason, reason + "*"), error.reason
    assert str(error) == f"{error.url}: {error.reason}"
    assert len(replica.requests) == 1


def test_forward_a_connection_closed_unanswered_is_unreachable() -> None:
    replica = RawServer([HANG_UP])
    with pytest.raises(UpstreamUnreachable) as raised:
        send(replica)
    # Not answered at all: as safe to send to the next replica as a refused connection.
    assert raised.value.failure is Failure.UNANSWERED
    assert (raised.value.kind, raised.value.status) == ("connect", 502)
    assert raised.value.reason == "closed the connection without answering"
    assert len(replica.requests) == 1


def test_forward_a_replica_that_does_not_answer_in_time_is_504() -> None:
    replica = RawServer([SILENCE], silence=1.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as raised:
        send(replica, timeout=0.3)
    # send() closes the stand-in, which waits out its 1 s of silence: 0.3 s, then that second,
    # and room for a loaded machine.
    assert time.monotonic() - started < 3
    assert (raised.value.kind, raised.value.status) == ("timeout", 504)
    assert raised.value.reason == "no answer in time: nothing received in 0.3 s"


def test_forward_a_refused_connection_is_unreachable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{taken.getsockname()[1]}"

        async def run() -> None:
            async with make_client(5) as client:
                await forward(client, url, "GET", "/api/v2/status", [], b"")

        with pytest.raises(UpstreamUnreachable) as raised:
            asyncio.run(run())
    assert (raised.value.kind, raised.value.status) == ("connect", 502)
    assert str(raised.value) == f"{url}: cannot connect: Connection refused"


def test_forward_a_connect_timeout_is_unreachable() -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, connecting hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        address = full.getsockname()
        queued = []
        for _ in range(3):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(address)
            queued.append(client)
        url = "http://{}:{}".format(*address)

        async def run() -> None:
            async with make_client(0.3) as client:
                await forward(client, url, "GET", "/api/v2/status", [], b"")

        try:
            with pytest.raises(UpstreamUnreachable) as raised:
                asyncio.run(run())
        finally:
            for client in queued:
                client.close()
    assert raised.value.kind == "connect"  # not sent: the next replica is tried
    assert raised.value.reason == "connect timeout: not connected in 0.3 s"


def test_forward_a_replica_that_stops_reading_the_body_times_out_in_all() -> None:
    """A replica that never reads: the wait for its answer begins only once the request is
    sent, which it never is, so the three-times bound of the whole request ends it."""
    with socket.socket() as deaf:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.bind(("127.0.0.1", 0))
        deaf.listen(8)  # connections complete, but nothing is ever read
        url = "http://{}:{}".format(*deaf.getsockname())

        async def run() -> None:
            async with make_client(0.3) as client:
                await forward(client, url, "POST", "/api/v2/status", [], b"x" * (64 << 20))

        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as raised:
            asyncio.run(run())
    assert 0.8 < time.monotonic() - started < 10  # bounded, not hung on the unread body
    assert raised.value.reason == "no answer in time: not done in 0.9 s"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n", "status answered 500"),
        (b"", "closed the connection without answering"),
        (None, "cannot connect: Connection refused"),
    ],
)
def test_probe_says_why_a_replica_is_unhealthy(answer: bytes | None, problem: str) -> None:
    # Every connection gets the answer: a probe that fails closes its connection, and the
    # stand-in answers each new one alike.
    replica = RawServer([answer] * 3) if answer is not None else None
    url = replica.url if replica is not None else "http://127.0.0.1:1"  # nothing on port 1

    async def run() -> str | None:
        async with make_client(5) as client:
            return await probe(client, Replica(url, url))

    try:
        assert asyncio.run(run()) == problem
    finally:
        if replica is not None:
            replica.close()


def test_sigterm_drains_in_flight_requests_and_exits_0(
    fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(1)
    bn = boundary("--upstreams", f"s-x={replicas.url(replicas.ips[0])}")
    bn.wait_healthy("s-x", 1)
    replicas.delay = 0.5
    with ThreadPoolExecutor(1) as pool, bn.api as api:
        pending = pool.submit(api.post, "/api/v2/subnet/s-x/read_state")
        wait_until(lambda: len(replicas.seen) == 1, "request reached the replica")
        bn.program.process.send_signal(signal.SIGTERM)
        assert pending.result(timeout=10).status_code == 200
    assert bn.program.process.wait(timeout=10) == 0
    assert "received SIGTERM" in bn.program.log_text()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--tls-hostname", DOMAIN],
            {},
            "give exactly one of --registry-local-store-path (REGISTRY_LOCAL_STORE_PATH), "
            "--registry-url (REGISTRY_URL) or --upstreams (UPSTREAMS)",
        ),
        (
            ["--tls-hostname", DOMAIN, "--upstreams", "a=http://127.0.0.1:1"],
            {"REGISTRY_LOCAL_STORE_PATH": "/tmp/registry"},
            "or --upstreams (UPSTREAMS), not several",
        ),
        (["--upstreams", "a=http://127.0.0.1:1"], {}, "--tls-hostname (TLS_HOSTNAME) is required"),
        (
            ["--upstreams", "a=http://127.0.0.1:1"],
            {"TLS_HOSTNAME": DOMAIN, "LISTEN_HTTP_ADDR": "nowhere"},
            "--listen-http-addr (LISTEN_HTTP_ADDR): listen address 'nowhere': expected HOST:PORT",
        ),
        (
            ["--tls-hostname", DOMAIN, "--upstreams", "a=http://127.0.0.1:1"],
            {"UPSTREAM_TIMEOUT": "soon"},
            "--upstream-timeout (UPSTREAM_TIMEOUT): 'soon' is not a duration",
        ),
        (
            ["--tls-hostname", DOMAIN, "--no-such-flag"],
            {},
            "unrecognized arguments: --no-such-flag",
        ),
    ],
)
def test_bad_flags_exit_2(
    args: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_config(args, env)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_program_exits_2_on_bad_flags_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--tls-hostname", DOMAIN],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            k: v
            for k, v in os.environ.items()
            if k not in ("UPSTREAMS", "REGISTRY_LOCAL_STORE_PATH", "REGISTRY_URL")
        },
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        "ic-boundary: error: give exactly one of --registry-local-store-path "
        "(REGISTRY_LOCAL_STORE_PATH), --registry-url (REGISTRY_URL) or --upstreams (UPSTREAMS)\n"
    )
    assert "Traceback" not in result.stderr


def test_taken_port_exits_1_naming_it(loopback_ip: str) -> None:
    with socket.create_server((loopback_ip, 443)):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                MODULE,
                "--tls-hostname",
                DOMAIN,
                "--upstreams",
                "a=http://127.0.0.1:1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "LISTEN_HTTP_ADDR": f"{loopback_ip}:443"},
        )
    assert result.returncode == 1
    assert f"api: cannot listen on {loopback_ip}:443: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_flag_beats_environment(
    fake_replicas: Callable[[int], FakeReplicas], boundary: Callable[..., Boundary]
) -> None:
    replicas = fake_replicas(1)
    bn = boundary(
        "--upstreams",
        f"s-flag={replicas.url(replicas.ips[0])}",
        env={"UPSTREAMS": "s-env=http://127.0.0.1:1", "TLS_HOSTNAME": "env.test"},
    )
    bn.wait_healthy("s-flag", 1)
    assert bn.metric("ic_boundary_replicas", subnet="s-env") is None
    assert httpx.get(f"http://{bn.ip}:443/health", headers={"host": DOMAIN}).status_code == 204
