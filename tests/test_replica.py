"""The replica stub as a real process on loopback: status, lifecycle, API, faults, stopping."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import httpx
import psutil
import pytest
from conftest import Program, free_loopback_ip, wait_for_http
from prometheus_client.parser import text_string_to_metric_families

from harness.node.replica.rootkey import DER_PREFIX, default_root_key
from harness.node.status import CORS_HEADERS, decode_status

MODULE = "harness.node.replica"
T = TypeVar("T")
CBOR = {"content-type": "application/cbor"}
# A CBOR map, as an agent's envelope is one; the stub only checks that the body is CBOR.
# One client for the whole module: a new one per request costs an SSL context each time.
http = httpx.Client(timeout=10)
ENVELOPE = cbor2.dumps({"content": {"request_type": "query", "canister_id": b"\x00"}})


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Poll `check` until it returns something other than None; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Replica:
    program: Program
    ip: str
    api: str
    metrics_url: str

    def status(self) -> dict[str, Any]:
        response = http.get(f"{self.api}/api/v2/status", timeout=5)
        assert response.status_code == 200, response.text
        return dict(cbor2.loads(response.content))

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = http.get(self.metrics_url, timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_state(self, state: str) -> dict[str, Any]:
        """Poll the status until the replica is in `state`; return that status."""

        def check() -> dict[str, Any] | None:
            status = self.status()
            return status if status["replica_health_status"] == state else None

        return wait_for(check, f"replica {state}")

    def wait_healthy(self) -> dict[str, Any]:
        return self.wait_state("healthy")


StartReplica = Callable[..., Replica]


@pytest.fixture
def start_replica(start_program: Callable[..., Program], loopback_ip: str) -> StartReplica:
    """Start a replica on `loopback_ip`:8080/9090; ready once its metrics port answers."""

    def start(*args: str) -> Replica:
        metrics_url = f"http://{loopback_ip}:9090/metrics"
        program = start_program(
            MODULE,
            f"--http-listen={loopback_ip}:8080",
            f"--metrics-listen={loopback_ip}:9090",
            *args,
            ready_url=metrics_url,
        )
        return Replica(program, loopback_ip, f"http://{loopback_ip}:8080", metrics_url)

    return start


SHARED_KEY = DER_PREFIX + bytes([0xA0]) + bytes(range(95))


@pytest.fixture(scope="module")
def shared_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """One healthy replica for the tests that only send requests (saves a start per test).

    Started with `--replica-version=1.2.3-test --node-id=n1 --subnet-id=s1` and a root key file
    holding `SHARED_KEY`. Tests using it compare request counters as deltas.
    """
    directory = tmp_path_factory.mktemp("shared-replica")
    (directory / "root.der").write_bytes(SHARED_KEY)
    ip = free_loopback_ip([8080, 9090])
    log = directory / "replica.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                MODULE,
                f"--http-listen={ip}:8080",
                f"--metrics-listen={ip}:9090",
                "--replica-version=1.2.3-test",
                "--node-id=n1",
                "--subnet-id=s1",
                f"--root-key-file={directory / 'root.der'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    replica = Replica(Program(process, log), ip, f"http://{ip}:8080", f"http://{ip}:9090/metrics")
    try:
        wait_for_http(replica.metrics_url, process=process)
        replica.wait_healthy()
        yield replica
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def faults_file(tmp_path: Path) -> Iterator[Callable[[dict[str, Any] | str | None], Path]]:
    """A writer of the faults file (atomically, by rename); None removes the file."""
    path = tmp_path / "faults.json"

    def write(content: dict[str, Any] | str | None) -> Path:
        if content is None:
            path.unlink(missing_ok=True)
            return path
        text = content if isinstance(content, str) else json.dumps(content)
        temporary = tmp_path / ".faults.json.tmp"
        temporary.write_text(text)
        os.replace(temporary, path)
        return path

    yield write


def run_replica(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run the replica to completion (for starts that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- /api/v2/status -----------------------------------------------------------------------


def test_status_is_self_described_cbor_and_metrics_are_served(shared_replica: Replica) -> None:
    replica = shared_replica
    requests_before = replica.metric(
        "replica_http_requests_total", route="status", method="GET", status="200"
    )
    response = http.get(f"{replica.api}/api/v2/status")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/cbor"
    for name, value in CORS_HEADERS:
        assert response.headers[name] == value
    assert response.content.startswith(bytes.fromhex("d9d9f7"))

    raw = cbor2.loads(response.content)
    assert set(raw) == {
        "ic_api_version",
        "root_key",
        "impl_version",
        "impl_hash",
        "replica_health_status",
        "certified_height",
    }
    assert raw["ic_api_version"] == "0.18.0"
    assert raw["impl_version"] == "1.2.3-test"
    assert raw["impl_hash"] == hashlib.sha256(b"1.2.3-test").hexdigest()
    assert raw["replica_health_status"] == "healthy"
    assert type(raw["certified_height"]) is int
    assert raw["certified_height"] >= 0
    assert raw["root_key"] == SHARED_KEY

    status = decode_status(response.content)
    assert status.is_healthy
    assert status.ic_api_version == "0.18.0"
    assert status.impl_version == "1.2.3-test"
    assert status.root_key == SHARED_KEY
    assert status.extra == {}

    head = http.head(f"{replica.api}/api/v2/status")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/cbor"
    assert head.headers["access-control-allow-origin"] == "*"

    root = http.get(f"http://{replica.ip}:9090/")
    assert root.status_code == 200
    lines = [line for line in root.text.splitlines() if not line.startswith("#")]
    for name in (
        "critical_errors_total",
        "consensus_invalidated_artifacts_total",
        "dkg_invalidated_artifacts_total",
        "idkg_invalidated_artifacts_total",
        "certification_invalidated_artifacts_total",
        "canister_http_invalidated_artifacts_total",
    ):
        assert f"{name} 0.0" in lines
    # The IC driver splits each line in exactly two fields and matches names by prefix.
    assert all(len(line.split(" ")) == 2 for line in lines)
    assert not [line for line in lines if "_created" in line]
    assert replica.metric("replica_info", version="1.2.3-test", node_id="n1", subnet_id="s1") == 1
    requests = replica.metric(
        "replica_http_requests_total", route="status", method="GET", status="200"
    )
    assert requests is not None
    assert requests_before is not None
    assert requests == requests_before + 1, "GET counted once, HEAD apart"
    other = http.get(f"http://{replica.ip}:9090/other")
    assert other.status_code == 404
    assert "/metrics" in other.text


def test_lifecycle_goes_starting_waiting_healthy(start_replica: StartReplica) -> None:
    replica = start_replica("--warmup-seconds=0.8", "--block-interval=0.05")
    seen: list[dict[str, Any]] = []

    def healthy() -> bool | None:
        seen.append(replica.status())
        return True if seen[-1]["replica_health_status"] == "healthy" else None

    wait_for(healthy, "replica healthy")
    states = [s["replica_health_status"] for s in seen]
    order = [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]
    assert order == ["starting", "waiting_for_certified_state", "healthy"]
    for status in seen:
        if status["replica_health_status"] == "starting":
            assert "certified_height" not in status
        if status["replica_health_status"] == "waiting_for_certified_state":
            assert status["certified_height"] == 0
        # Without a root key file every replica serves the same fixed key.
        assert status["root_key"] == default_root_key()

    first = seen[-1]["certified_height"]
    wait_for(
        lambda: replica.status()["certified_height"] >= first + 3 or None,
        "certified height to grow by 3",
    )
    transitions = {
        labels: value
        for (name, labels), value in replica.metrics().items()
        if name == "replica_http_health_status_state_transitions_total"
    }
    assert transitions == {
        (("after", "waiting_for_certified_state"), ("before", "starting")): 1.0,
        (("after", "healthy"), ("before", "waiting_for_certified_state")): 1.0,
    }


# --- canister and subnet endpoints --------------------------------------------------------

CANISTER = "rwlgt-iiaaa-aaaaa-aaaaa-cai"
SUBNET = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe"


def canister_error(target: str, target_id: str) -> dict[str, Any]:
    if target == "canister":
        return {
            "reject_code": 3,
            "reject_message": f"Canister {target_id} not found.",
            "error_code": "IC0301",
        }
    return {
        "reject_code": 4,
        "reject_message": f"Subnet {target_id} not found.",
        "error_code": "IC0404",
    }


ROUTES = [
    ("v2", "canister", "query"),
    ("v2", "canister", "call"),
    ("v2", "canister", "read_state"),
    ("v2", "subnet", "read_state"),
    ("v3", "canister", "query"),
    ("v3", "canister", "call"),
    ("v3", "canister", "read_state"),
    ("v3", "subnet", "read_state"),
    ("v3", "subnet", "query"),
    ("v4", "canister", "call"),
    ("v4", "subnet", "call"),
]


def test_every_canister_and_subnet_route_rejects_as_the_ic(shared_replica: Replica) -> None:
    replica = shared_replica
    labels = {"route": "/api/v3/canister/{id}/query", "method": "POST", "status": "200"}
    before = replica.metric("replica_http_requests_total", **labels) or 0
    for version, target, action in ROUTES:
        target_id = CANISTER if target == "canister" else SUBNET
        url = f"{replica.api}/api/{version}/{target}/{target_id}/{action}"
        response = http.post(url, content=ENVELOPE, headers=CBOR)
        error = canister_error(target, target_id)
        where = f"{version} {target} {action}"
        assert response.headers["access-control-allow-origin"] == "*", where
        if action == "read_state":
            assert response.status_code == 404, where
            assert response.text == error["reject_message"], where
            assert response.headers["content-type"].startswith("text/plain"), where
            continue
        assert response.status_code == 200, where
        assert response.headers["content-type"] == "application/cbor", where
        assert response.content.startswith(bytes.fromhex("d9d9f7")), where
        body = dict(cbor2.loads(response.content))
        if action == "query":
            assert body == {"status": "rejected", **error}, where
        elif version == "v2":
            assert body == error, where
        else:
            assert body == {"status": "non_replicated_rejection", **error}, where
    assert replica.metric("replica_http_requests_total", **labels) == before + 1


def test_bad_requests_get_400_404_405_413(shared_replica: Replica) -> None:
    replica = shared_replica
    query = f"{replica.api}/api/v2/canister/{CANISTER}/query"

    not_cbor = http.post(query, content=b"\xff\xfe not cbor", headers=CBOR)
    assert not_cbor.status_code == 400
    assert "not valid CBOR" in not_cbor.text
    empty = http.post(query, content=b"", headers=CBOR)
    assert empty.status_code == 400
    assert "not valid CBOR" in empty.text
    json_type = http.post(query, content=ENVELOPE, headers={"content-type": "application/json"})
    assert json_type.status_code == 400
    assert "expected application/cbor" in json_type.text
    no_type = http.post(query, content=ENVELOPE)
    assert no_type.status_code == 400

    for path in (
        "/",
        "/api/v2/nothing",
        f"/api/v5/canister/{CANISTER}/query",
        f"/api/v4/canister/{CANISTER}/query",
        f"/api/v2/canister/{CANISTER}/query/x",
    ):
        missing = http.post(f"{replica.api}{path}", content=ENVELOPE, headers=CBOR)
        assert missing.status_code == 404, path
        assert missing.text == f"not found: {path}"

    get_query = http.get(query)
    assert get_query.status_code == 405
    assert get_query.headers["allow"] == "POST"
    post_status = http.post(f"{replica.api}/api/v2/status", content=ENVELOPE, headers=CBOR)
    assert post_status.status_code == 405
    assert post_status.headers["allow"] == "GET, HEAD"

    limit = 5 * 1024 * 1024
    at_limit = cbor2.dumps(b"x" * (limit - 5))
    assert len(at_limit) == limit
    assert http.post(query, content=at_limit, headers=CBOR, timeout=30).status_code == 200
    over = http.post(query, content=b"\x00" * (limit + 1), headers=CBOR, timeout=30)
    assert over.status_code == 413
    assert "5 MiB" in over.text
    # The stub is still serving after dropping an oversized body.
    assert replica.status()["replica_health_status"] == "healthy"


# --- faults ---------------------------------------------------------------------------------


def test_fail_at_start_exits_with_the_code_before_binding(
    faults_file: Callable[[dict[str, Any] | str | None], Path], loopback_ip: str
) -> None:
    path = faults_file({"fail_at_start": 7})
    result = run_replica(
        f"--http-listen={loopback_ip}:8080",
        f"--metrics-listen={loopback_ip}:9090",
        f"--faults-file={path}",
    )
    assert result.returncode == 7
    assert "fail_at_start" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Started server" not in result.stderr


def test_unhealthy_fault_holds_waiting_and_stops_the_height(
    start_replica: StartReplica, faults_file: Callable[[dict[str, Any] | str | None], Path]
) -> None:
    path = faults_file(None)
    replica = start_replica(f"--faults-file={path}", "--block-interval=0.05")
    replica.wait_healthy()

    faults_file({"unhealthy": True})
    waiting = replica.wait_state("waiting_for_certified_state")
    # Six block intervals without growth: the height is frozen, not just slow.
    time.sleep(0.3)
    frozen = replica.status()
    assert frozen["replica_health_status"] == "waiting_for_certified_state"
    assert frozen["certified_height"] == waiting["certified_height"]
    for version, target, action in ROUTES:
        url = f"{replica.api}/api/{version}/{target}/x/{action}"
        response = http.post(url, content=ENVELOPE, headers=CBOR)
        assert response.status_code == 503, url
        assert response.text == "replica is not healthy yet: waiting_for_certified_state", url

    faults_file(None)
    healthy = replica.wait_healthy()
    wait_for(
        lambda: replica.status()["certified_height"] > healthy["certified_height"] or None,
        "certified height to grow again",
    )
    assert (
        replica.metric(
            "replica_http_health_status_state_transitions_total",
            before="healthy",
            after="waiting_for_certified_state",
        )
        == 1
    )
    assert (
        replica.metric(
            "replica_http_health_status_state_transitions_total",
            before="waiting_for_certified_state",
            after="healthy",
        )
        == 2
    )


def timed_status(replica: Replica) -> float:
    """Seconds one healthy status request takes."""
    started = time.monotonic()
    assert replica.status()["replica_health_status"] == "healthy"
    return time.monotonic() - started


def test_delay_and_critical_errors_faults_and_a_bad_file_is_ignored(
    start_replica: StartReplica, faults_file: Callable[[dict[str, Any] | str | None], Path]
) -> None:
    path = faults_file(None)
    replica = start_replica(f"--faults-file={path}")
    replica.wait_healthy()
    assert replica.metric("critical_errors_total") == 0

    # A delay far above what a request costs on a starved machine, so that "delayed" and "not
    # delayed" cannot be confused under -n 4 on 2 cores.
    faults_file({"delay_seconds": 2.0, "critical_errors": 3})
    wait_for(lambda: replica.metric("critical_errors_total") == 3 or None, "critical_errors 3")
    assert timed_status(replica) >= 2.0
    started = time.monotonic()
    replica.metrics()
    assert time.monotonic() - started < 1.0, "the metrics port is not delayed"

    faults_file({"critical_errors": "many", "delay_seconds": 0})
    wait_for(lambda: "ignored" in replica.program.log_text() or None, "bad file logged")
    log = replica.program.log_text()
    assert "\"critical_errors\" must be an integer >= 0, got 'many'" in log
    faults_file({"delay": 1})
    wait_for(lambda: "unknown key(s) ['delay']" in replica.program.log_text() or None, "unknown")
    assert timed_status(replica) >= 2.0, "the last good knobs stay in force"

    faults_file({"critical_errors": 1})
    wait_for(lambda: timed_status(replica) < 1.0 or None, "the delay to be lifted")
    assert replica.metric("critical_errors_total") == 3, "a counter never goes down"
    assert replica.program.process.poll() is None


# --- stop, bad flags, taken ports ------------------------------------------------------------


def test_sigterm_drains_a_slow_request_and_exits_0(
    start_replica: StartReplica, faults_file: Callable[[dict[str, Any] | str | None], Path]
) -> None:
    # The request must still be in flight after the SIGTERM and the listener's close are seen:
    # 5 s leaves room for a starved machine's steps in between.
    path = faults_file({"delay_seconds": 5.0})
    replica = start_replica(f"--faults-file={path}", "--warmup-seconds=0")
    result: dict[str, Any] = {}

    def slow_request() -> None:
        started = time.monotonic()
        result["response"] = httpx.get(f"{replica.api}/api/v2/status", timeout=10)
        result["elapsed"] = time.monotonic() - started

    process = psutil.Process(replica.program.process.pid)

    def api_sockets(status: str) -> bool | None:
        connections = process.net_connections("tcp")
        return any(c.status == status and c.laddr.port == 8080 for c in connections) or None

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: api_sockets(psutil.CONN_ESTABLISHED), "the slow request to be in flight")
    replica.program.process.send_signal(signal.SIGTERM)
    wait_for(lambda: not api_sockets(psutil.CONN_LISTEN) or None, "the API to stop accepting")
    assert thread.is_alive(), "stopped accepting while the slow request is still in flight"
    thread.join(timeout=10)
    assert replica.program.process.wait(timeout=10) == 0
    assert result["response"].status_code == 200
    assert decode_status(result["response"].content).is_healthy
    assert result["elapsed"] >= 5.0
    assert "received SIGTERM" in replica.program.log_text()


def test_bad_flag_exits_2_with_a_message() -> None:
    result = run_replica("--http-listen=nonsense")
    assert result.returncode == 2
    assert "argument --http-listen: listen address 'nonsense': expected HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_root_key_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "root.der"
    path.write_bytes(DER_PREFIX + bytes(95))
    result = run_replica(f"--root-key-file={path}")
    assert result.returncode == 2
    expected = "expected 133 bytes (DER of a BLS12-381 G2 public key), got 132"
    assert f"replica: error: root key file {path}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("taken", "server"), [(8080, "api"), (9090, "metrics")])
def test_taken_port_fails_the_start_with_a_clear_error(
    loopback_ip: str, taken: int, server: str
) -> None:
    with socket.socket() as holder:
        holder.bind((loopback_ip, taken))
        holder.listen()
        result = run_replica(
            f"--http-listen={loopback_ip}:8080", f"--metrics-listen={loopback_ip}:9090"
        )
    assert result.returncode == 1
    assert (
        f"replica: error: {server}: cannot listen on {loopback_ip}:{taken}: Address already in use"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "replica"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert "--faults-file" in result.stdout
