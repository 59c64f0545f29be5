"""The registry service (`python -m harness.node.registry`) and the HTTP source that nodes poll
it with: versions served exactly as stored, the client's last-good rule across outages, and an
orchestrator that reads its registry over HTTP only."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import Program, wait_for_http
from raw_http import RawServer
from test_registry import snapshot as make_snapshot

from harness.node.registry import (
    LocalStore,
    NodeRecord,
    RegistryClient,
    RegistryFormatError,
    SubnetRecord,
    SubnetType,
)
from harness.node.registry.http import HttpSource, RegistryUnreachable
from harness.node.status import decode_status

MODULE = "harness.node.registry"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "registry")
    store.path.mkdir()
    return store


def serve(start_program: Callable[..., Program], store: LocalStore, ip: str) -> str:
    url = f"http://{ip}:8000"
    start_program(MODULE, "--store", str(store.path), "--listen", f"{ip}:8000", ready_url=url + "/")
    return url


def test_versions_are_served_as_stored_and_the_source_reads_them(
    start_program: Callable[..., Program], store: LocalStore, loopback_ip: str
) -> None:
    url = serve(start_program, store, loopback_ip)
    source = HttpSource(url)
    assert source.latest_version() == 0
    store.write(make_snapshot(1))
    store.write(make_snapshot(2))
    assert source.latest_version() == 2
    assert source.read(2) == store.read(2)
    raw = httpx.get(f"{url}/api/v1/registry/versions/1")
    assert raw.status_code == 200
    assert raw.content == store.file(1).read_bytes()
    with pytest.raises(RegistryFormatError, match="versions/3: no such registry version"):
        source.read(3)
    source.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/", 404, "served: /api/v1/registry/latest"),
        ("GET", "/api/v1/registry/versions/0", 404, "no registry version 0"),
        ("GET", "/api/v1/registry/versions/-1", 404, "not found"),
        ("GET", "/api/v1/registry/versions/%2e%2e", 404, "not found"),
        ("GET", "/api/v1/registry/versions/" + "9" * 30, 404, "no registry version"),
        ("PUT", "/api/v1/registry/versions/1", 405, "read-only"),
    ],
)
def test_anything_else_is_refused_plainly(
    start_program: Callable[..., Program],
    store: LocalStore,
    loopback_ip: str,
    method: str,
    path: str,
    status: int,
    says: str,
) -> None:
    store.write(make_snapshot(1))
    url = serve(start_program, store, loopback_ip)
    response = httpx.request(method, url + path, content=b"{}")
    assert response.status_code == status
    assert says in response.text


def test_the_client_keeps_the_last_good_version_while_the_service_is_down(
    start_program: Callable[..., Program], store: LocalStore, loopback_ip: str
) -> None:
    store.write(make_snapshot(1))
    url = f"http://{loopback_ip}:8000"
    program = start_program(
        MODULE, "--store", str(store.path), "--listen", f"{loopback_ip}:8000", ready_url=url
    )
    errors: list[tuple[int, Exception]] = []
    client = RegistryClient(
        HttpSource(url, timeout=1.0), on_error=lambda v, e: errors.append((v, e))
    )
    first = client.poll()
    assert first is not None and first.version == 1
    assert program.terminate() == 0
    assert client.poll() is first  # unreachable: the last good one, reported
    assert isinstance(errors[-1][1], RegistryUnreachable)
    assert f"{url}/api/v1/registry/latest" in str(errors[-1][1])


def test_a_corrupt_version_behind_the_service_is_skipped(
    start_program: Callable[..., Program], store: LocalStore, loopback_ip: str
) -> None:
    store.write(make_snapshot(1))
    (store.path / "00000000000000000002.json").write_text('{"version": 2, "subnets": ')
    url = serve(start_program, store, loopback_ip)
    errors: list[tuple[int, Exception]] = []
    client = RegistryClient(HttpSource(url), on_error=lambda v, e: errors.append((v, e)))
    snapshot = client.poll()
    assert snapshot is not None and snapshot.version == 1
    assert [version for version, _ in errors] == [2]
    assert "versions/2: not valid JSON" in str(errors[0][1])


def test_a_bad_store_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--store", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_orchestrator_runs_its_node_from_a_registry_service_alone(
    start_program: Callable[..., Program], tmp_path: Path, make_loopback_ip: Callable[[], str]
) -> None:
    registry_ip, node_ip = make_loopback_ip(), make_loopback_ip()
    store = LocalStore(tmp_path / "registry")
    store.path.mkdir()
    store.write(
        make_snapshot(
            1,
            subnets={"s1": SubnetRecord(SubnetType.APPLICATION, ("node-1",), "1.0.0")},
            nodes={"node-1": NodeRecord(node_ip)},
            api_boundary_nodes={},
        )
    )
    url = serve(start_program, store, registry_ip)
    orchestrator = start_program(
        "harness.node.orchestrator",
        "--node-id", "node-1",
        "--registry-url", url,
        "--data-dir", str(tmp_path / "node"),
        "--metrics-listen-addr", f"{node_ip}:9091",
        "--dashboard-listen-addr", f"{node_ip}:7070",
        "--registry-poll-interval", "0.1",
    )  # fmt: skip
    replica: int | None = None
    try:
        status_url = f"http://{node_ip}:8080/api/v2/status"
        wait_for_http(status_url, timeout=30)
        deadline = time.monotonic() + 10
        while not decode_status(httpx.get(status_url).content).is_healthy:
            assert time.monotonic() < deadline, "the replica never became healthy"
            time.sleep(0.05)
        dashboard = httpx.get(f"http://{node_ip}:7070/").text
        assert "last registry version: 1" in dashboard
        assert "subnet id: s1" in dashboard
        replica = int(dashboard.split("replica process id: ", 1)[1].split()[0])
    finally:
        # SIGTERM, not the fixture's SIGKILL of its group: the orchestrator stops its programs
        # (each in a process group of its own), so nothing outlives the test.
        assert orchestrator.terminate(timeout=30) == 0
    assert replica is not None and not psutil.pid_exists(replica)


# `HttpSource` against raw TCP stand-ins for the service.
def _latest(n: int) -> bytes:
    body = json.dumps({"latest": n}).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture
def raw_service() -> Iterator[Callable[..., RawServer]]:
    services: list[RawServer] = []

    def start(answers: list[bytes | None], keep_alive: bool = False) -> RawServer:
        services.append(RawServer(answers, keep_alive=keep_alive))
        return services[-1]

    yield start
    for service in services:
        service.close()


def test_a_connection_the_service_closed_between_polls_is_replaced(
    raw_service: Callable[..., RawServer],
) -> None:
    # Each answer keeps the connection alive (HTTP/1.1, no "Connection: close"), then the
    # service closes it anyway, as one does after its keep-alive timeout.
    service = raw_service([_latest(1), _latest(2)])
    source = HttpSource(service.url)
    assert source.latest_version() == 1
    time.sleep(0.1)  # the close has arrived
    assert source.latest_version() == 2  # asked again on a new connection, no error
    assert service.connections == 2
    source.close()


def test_polls_share_one_kept_alive_connection(raw_service: Callable[..., RawServer]) -> None:
    service = raw_service([_latest(1), _latest(2), _latest(3)], keep_alive=True)
    source = HttpSource(service.url)
    assert [source.latest_version() for _ in range(3)] == [1, 2, 3]
    assert service.connections == 1
    source.close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"", "the service closed the connection without answering"),
        (b"NOT HTTP\r\n\r\n", "broken answer: BadStatusLine: NOT HTTP"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
            "broken answer: cut short after 5 bytes of its body, 95 more expected",
        ),
        (None, "timed out after 0.3 s"),
        (
            b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n",
            "answered 302",
        ),
    ],
    ids=["closed-unanswered", "garbage", "body-cut-short", "silent", "redirect-not-followed"],
)
def test_a_source_says_what_went_wrong(
    raw_service: Callable[..., RawServer], answer: bytes | None, reason: str
) -> None:
    service = raw_service([answer])
    source = HttpSource(service.url, timeout=0.3)
    with pytest.raises(RegistryUnreachable) as raised:
        source.latest_version()
    separator = " " if reason.startswith("answered") else ": "
    assert str(raised.value) == f"registry {service.url}/api/v1/registry/latest{separator}{reason}"
    source.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1:8000", "not an http:// or https:// URL"),
        ("127.0.0.1:8000", "not an http:// or https:// URL"),
        ("http://127.0.0.1:port", "not a URL: Port could not be cast to integer value as 'port'"),
        ("http://127.0.0.1:1", "cannot connect: Connection refused"),
    ],
)
def test_a_source_that_cannot_connect_says_why_when_asked(url: str, reason: str) -> None:
    source = HttpSource(url)  # never raises: a bad URL is reported per poll, as a dead service
    with pytest.raises(RegistryUnreachable) as raised:
        source.read(1)
    assert str(raised.value) == f"registry {url}/api/v1/registry/versions/1: {reason}"


def test_an_https_source_speaks_tls() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"

        def answer_in_plain_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(_latest(1))

        thread = threading.Thread(target=answer_in_plain_http, daemon=True)
        thread.start()
        with pytest.raises(RegistryUnreachable) as raised:
            HttpSource(url, timeout=5.0).latest_version()  # a TLS handshake, answered in plain
        thread.join(timeout=5)
    assert str(raised.value).startswith(
        f"registry {url}/api/v1/registry/latest: cannot connect: [SSL"
    )
