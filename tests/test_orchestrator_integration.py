"""The real orchestrator process against a registry store, observed over HTTP.

The node programs come from a fake `--ic-binary-directory`: small Python scripts named
`replica`, `ic-gateway` and `ic-boundary` that serve their argv/env as JSON (and the replica a
healthy `/api/v2/status`) on the address they are given, exec'd (`--spawn exec`: the fork
server runs the real programs only). `test_real_*` run the same flow against the real
programs, forked by the orchestrator's fork server (the default). Observation is through the
dashboard (7070), the metrics (9091), the programs' own ports and psutil.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.node.orchestrator.args import default_binary_directory
from harness.node.registry import (
    ApiBoundaryNodeRecord,
    LocalStore,
    NodeRecord,
    RegistrySnapshot,
    SubnetRecord,
    SubnetType,
)
from harness.node.status import decode_status

T = TypeVar("T")
NODE = "node-1"
GRACE = "2"
TAG = "ORCHESTRATOR_TEST_NODE"  # env var every program of a test node inherits

FAKE_PROGRAM = """#!{python}
import json, os, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from harness.node.listen import parse_listen
from harness.node.status import CONTENT_TYPE_CBOR, STATUS_PATH, StatusResponse, encode_status

NAME = os.path.basename(sys.argv[0])
ARGS = sys.argv[1:]
if os.path.exists(os.path.join(os.path.dirname(sys.argv[0]), NAME + ".crash")):
    sys.exit("told to crash")
SHOWN_ENV = ("LISTEN_PLAIN", "IC_URL", "DOMAIN", "METRICS_LISTEN", "LISTEN_HTTP_ADDR",
             "OBS_METRICS_ADDR", "REGISTRY_LOCAL_STORE_PATH", "EXTRA")
if NAME == "replica":
    listen = ARGS[ARGS.index("--http-listen") + 1]
    version = ARGS[ARGS.index("--replica-version") + 1]
else:
    listen = os.environ["LISTEN_PLAIN" if NAME == "ic-gateway" else "LISTEN_HTTP_ADDR"]
    version = None
INFO = {{"name": NAME, "pid": os.getpid(), "argv": ARGS,
        "env": {{k: v for k, v in os.environ.items() if k in SHOWN_ENV}}}}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == STATUS_PATH:
            status = StatusResponse(impl_version=version, replica_health_status="healthy")
            body, kind = encode_status(status), CONTENT_TYPE_CBOR
        else:
            body, kind = json.dumps(INFO).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


address = parse_listen(listen)


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET


server = Server((address.host, address.port), Handler)
print(NAME, "listening on", listen, flush=True)
server.serve_forever()
"""


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 8.0) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError) as exc:
            result, last = None, exc
        if result is not None and result is not False:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Node:
    """One orchestrator under test: its registry, data dir, HTTP views and processes."""

    def __init__(
        self, ip: str, tmp_path: Path, bin_dir: Path, start_program: Callable[..., object]
    ):
        self.ip = ip
        self.tmp_path = tmp_path
        self.bin_dir = bin_dir
        self.start_program = start_program
        self.store = LocalStore(tmp_path / "registry")
        self.data_dir = tmp_path / "data"
        self.version = 0
        self.programs: list[object] = []
        self.http = httpx.Client(timeout=2.0)
        self.tag = str(tmp_path)

    # ---------------------------------------------------------------- orchestrator
    def start(self, *extra: str) -> object:
        program = self.start_program(
            "harness.node.orchestrator",
            "--node-id", NODE,
            "--registry-local-store", str(self.store.path),
            "--data-dir", str(self.data_dir),
            "--ic-binary-directory", str(self.bin_dir),
            "--spawn", "fork" if self.bin_dir == default_binary_directory() else "exec",
            "--metrics-listen-addr", f"{self.ip}:9091",
            "--dashboard-listen-addr", f"{self.ip}:7070",
            "--stop-grace-period", GRACE,
            "--registry-poll-interval", "0.05",
            "--version", "1.2.3",
            *extra,
            env={TAG: self.tag},
            ready_url=f"http://{self.ip}:7070/",
        )  # fmt: skip
        self.programs.append(program)
        return program

    @property
    def orchestrator(self) -> object:
        return self.programs[-1]

    # ---------------------------------------------------------------- registry
    def write(
        self,
        subnet: str | None = "subnet-a",
        subnet_type: SubnetType = SubnetType.APPLICATION,
        version: str = "v1",
        features: frozenset[str] = frozenset(),
        api_boundary_domain: str | None = None,
    ) -> None:
        self.version += 1
        self.store.write(
            RegistrySnapshot(
                self.version,
                subnets={subnet: SubnetRecord(subnet_type, (NODE,), version)} if subnet else {},
                nodes={NODE: NodeRecord(self.ip, domain=api_boundary_domain, features=features)},
                api_boundary_nodes=(
                    {NODE: ApiBoundaryNodeRecord(version)} if api_boundary_domain else {}
                ),
            )
        )

    def write_corrupt(self) -> None:
        self.version += 1
        (self.store.path / f"{self.version:020d}.json").write_text('{"version": ')

    # ---------------------------------------------------------------- views
    def dashboard(self) -> dict[str, str]:
        response = self.http.get(f"http://{self.ip}:7070/")
        response.raise_for_status()
        return dict(line.split(": ", 1) for line in response.text.splitlines())

    def pid(self, process: str) -> int | None:
        value = self.dashboard()[f"{process} process id"]
        return None if value == "None" else int(value)

    def await_pid(self, process: str, other_than: int | None = None) -> int:
        def check() -> int | None:
            pid = self.pid(process)
            return pid if pid is not None and pid != other_than else None

        return wait_until(check, f"{process} running (pid other than {other_than})")

    def await_stopped(self, process: str) -> None:
        wait_until(lambda: self.pid(process) is None, f"{process} stopped")

    def metric(self, name: str, **labels: str) -> float | None:
        text = self.http.get(f"http://{self.ip}:9091/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def metrics(self) -> dict[tuple[str, str | None], float]:
        """One scrape: (name, process label) -> value."""
        text = self.http.get(f"http://{self.ip}:9091/metrics").text
        return {
            (sample.name, sample.labels.get("process")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def info(self, port: int, pid: int | None = None) -> dict[str, object]:
        """What the program on `port` says about itself, once it answers (as `pid`)."""

        def check() -> dict[str, object] | None:
            info = dict(self.http.get(f"http://{self.ip}:{port}/info").json())
            return info if pid is None or info["pid"] == pid else None

        return wait_until(check, f"the program on port {port} (pid {pid}) answering")

    def status_version(self, port: int = 8080, host: str | None = None) -> str | None:
        """The replica's version once it reports healthy (through `port`), else None."""
        headers = {"Host": host} if host else None
        url = f"http://{self.ip}:{port}/api/v2/status"
        status = decode_status(self.http.get(url, headers=headers).content)
        return status.impl_version if status.is_healthy else None

    def program_pids(self) -> list[int]:
        """Live programs started by this test's orchestrators (found by an inherited env tag),
        the orchestrators themselves excluded."""
        orchestrators = {program.process.pid for program in self.programs}  # type: ignore[attr-defined]
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if (
                    process.pid not in orchestrators
                    and process.environ().get(TAG) == self.tag
                    and process.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(process.pid)
        return sorted(found)

    def kill_everything(self) -> None:
        for program in self.programs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(program.process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        for pid in self.program_pids():
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                os.kill(pid, signal.SIGKILL)
        self.http.close()


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("replica", "ic-gateway", "ic-boundary"):
        path = directory / name
        path.write_text(FAKE_PROGRAM.format(python=sys.executable))
        path.chmod(0o755)
    return directory


@pytest.fixture
def node(loopback_ip: str, tmp_path: Path, fake_bin: Path, start_program) -> Iterator[Node]:
    test_node = Node(loopback_ip, tmp_path, fake_bin, start_program)
    yield test_node
    test_node.kill_everything()


def test_replica_follows_the_registry(node: Node) -> None:
    node.start()
    assert node.dashboard()["subnet id"] == "Subnet not known yet"
    assert node.metric("ic_orchestrator_info", ic_active_version="1.2.3") == 1
    assert "ic_orchestrator_info" in node.http.get(f"http://{node.ip}:9091/").text
    node.write()
    first = node.await_pid("replica")
    argv = node.info(8080, first)["argv"]
    assert node.status_version() == "v1"
    assert argv == [
        "--replica-version", "v1",
        "--node-id", NODE,
        "--subnet-id", "subnet-a",
        "--http-listen", f"{node.ip}:8080",
        "--metrics-listen", f"{node.ip}:9090",
        "--faults-file", str(node.data_dir / "replica-faults.json"),
    ]  # fmt: skip
    assert json.loads((node.data_dir / "run" / "replica.pid").read_text())["pid"] == first

    node.write(version="v2")
    second = node.await_pid("replica", other_than=first)
    wait_until(lambda: node.status_version() == "v2", "replica v2 answering")
    # An upgrade is a planned restart: stopped once, started at once, no backoff (a wall-clock
    # bound here measured the machine's load, not the orchestrator).
    assert node.metric("orchestrator_process_restart_backoff_seconds", process="replica") == 0
    assert node.metric("orchestrator_processes_stop_attempts_total", process="replica") == 1
    assert not alive(first)
    assert node.dashboard()["replica version"] == "v2"

    node.write(subnet="subnet-b", version="v2")
    third = node.await_pid("replica", other_than=second)
    assert node.info(8080, third)["argv"][4:6] == ["--subnet-id", "subnet-b"]
    assert node.dashboard()["subnet id"] == "subnet-b"

    node.write(subnet=None)
    node.await_stopped("replica")
    assert node.dashboard()["subnet id"] == "Unassigned"
    assert not alive(third)
    with pytest.raises(httpx.ConnectError):
        node.http.get(f"http://{node.ip}:8080/info")
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 3
    assert node.metric("orchestrator_processes_stop_attempts_total", process="replica") == 3
    assert node.metric("orchestrator_registry_version") == 4
    assert not (node.data_dir / "run" / "replica.pid").exists()
    log = (node.data_dir / "logs" / "replica.log").read_text()
    assert log.count("orchestrator: starting replica:") == 3


def test_killed_replica_is_restarted_with_backoff(node: Node) -> None:
    node.start()
    node.write()
    first = node.await_pid("replica")
    os.kill(first, signal.SIGKILL)
    second = node.await_pid("replica", other_than=first)
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 2
    assert node.metric("orchestrator_processes_stop_attempts_total", process="replica") == 0
    # It ran for less than 10 s: the restart waited for the first backoff step.
    assert node.metric("orchestrator_process_restart_backoff_seconds", process="replica") == 0.5
    assert node.info(8080, second)["pid"] == second
    assert node.status_version() == "v1"


def test_crash_loop_backs_off_without_burning_cpu(node: Node) -> None:
    crash = node.bin_dir / "replica.crash"
    crash.touch()
    program = node.start()
    node.write()

    def in_second_backoff() -> bool:
        metrics = node.metrics()
        return (
            metrics.get(("orchestrator_process_restart_backoff_seconds", "replica")) == 1.0
            and metrics.get(("orchestrator_processes_start_attempts_total", "replica")) == 2
        )

    wait_until(in_second_backoff, "the second crash's 1 s backoff")
    # Mended before measuring, so that the third start succeeds however late this test sees
    # the backoff on a loaded machine (a third crash would make the attempts 4).
    crash.unlink()
    orchestrator = psutil.Process(program.process.pid)  # type: ignore[attr-defined]
    cpu_before = sum(orchestrator.cpu_times()[:2])
    time.sleep(0.3)  # inside the 1 s backoff: the orchestrator must be idle
    assert sum(orchestrator.cpu_times()[:2]) - cpu_before < 0.1
    pid = node.await_pid("replica")
    assert node.info(8080, pid)["pid"] == pid
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 3
    assert "restarting it in 1.0 s (crash-loop backoff)" in program.log_text()  # type: ignore[attr-defined]


def test_reset_forgets_the_backoff_and_starts_a_backed_off_program_at_once(node: Node) -> None:
    """The harness's `POST /reset` (ours, not the IC's) on the dashboard."""
    backoff = "orchestrator_process_restart_backoff_seconds"
    program = node.start()
    node.write()
    first = node.await_pid("replica")
    os.kill(first, signal.SIGKILL)  # dies quickly: restarted after 0.5 s
    second = node.await_pid("replica", other_than=first)
    os.kill(second, signal.SIGKILL)  # again: 1 s now
    wait_until(lambda: node.metric(backoff, process="replica") == 1.0, "the second backoff")

    answer = node.http.post(f"http://{node.ip}:7070/reset", timeout=15.0)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    lines = dict(line.split(": ", 1) for line in answer.text.splitlines())
    # Answered after the pass that started it: the lines show it running, as GET / does.
    assert lines["replica state"] == "running"
    third = int(lines["replica process id"])
    assert third not in (first, second) and alive(third)
    assert node.info(8080, third)["pid"] == third
    # Started after a backoff, a program keeps its delay until it stayed up 10 s; a reset
    # forgets it at once.
    assert node.metric(backoff, process="replica") == 0
    assert node.metric("orchestrator_resets_total") == 1
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 3
    journal = [
        json.loads(line)
        for line in (node.data_dir / "logs" / "events.jsonl").read_text().splitlines()
    ]
    assert [e["backoffs"] for e in journal if e["event"] == "reset"] == [{"replica": 1.0}]
    assert "reset: crash-loop backoffs forgotten (replica 1 s)" in program.log_text()  # type: ignore[attr-defined]

    # A running program is left alone by another reset.
    again = node.http.post(f"http://{node.ip}:7070/reset", timeout=15.0)
    assert again.status_code == 200 and "replica process id: " + str(third) in again.text
    assert node.pid("replica") == third
    # The next quick exit backs off by the first delay, as on a fresh orchestrator (not 2 s).
    os.kill(third, signal.SIGKILL)
    node.await_pid("replica", other_than=third)
    assert node.metric(backoff, process="replica") == 0.5
    assert node.http.get(f"http://{node.ip}:7070/reset").status_code == 404


@pytest.mark.parametrize("gate", ["flag", "registry feature"])
def test_gateway_runs_on_cloud_engines_only_while_the_gate_is_on(node: Node, gate: str) -> None:
    node.start(*(["--enable-ic-gateway"] if gate == "flag" else []))
    node.write(subnet_type=SubnetType.APPLICATION, features=frozenset({"ic_gateway"}))
    replica = node.await_pid("replica")
    node.write(subnet_type=SubnetType.CLOUD_ENGINE)
    if gate == "registry feature":
        wait_until(lambda: node.dashboard()["last registry version"] == "2", "version 2 applied")
        assert node.pid("ic-gateway") is None
        node.write(subnet_type=SubnetType.CLOUD_ENGINE, features=frozenset({"ic_gateway"}))
    gateway = node.await_pid("ic-gateway")
    assert node.dashboard()["ic-gateway enabled"] == "true"
    assert node.info(80, gateway)["env"] == {
        "LISTEN_PLAIN": f"{node.ip}:80",
        "IC_URL": f"http://{node.ip}:8080",
        "DOMAIN": "gateway.icp",
        "METRICS_LISTEN": f"{node.ip}:9325",
    }
    # Gate off (feature removed / subnet type changed) via a new registry version.
    if gate == "flag":
        node.write(subnet_type=SubnetType.APPLICATION)
    else:
        node.write(subnet_type=SubnetType.CLOUD_ENGINE)
    node.await_stopped("ic-gateway")
    assert not alive(gateway)
    assert node.pid("replica") == replica  # untouched
    assert node.metric("orchestrator_processes_stop_attempts_total", process="ic-gateway") == 1


def test_corrupt_registry_version_leaves_processes_untouched(node: Node) -> None:
    node.start()
    node.write()
    replica = node.await_pid("replica")
    node.write_corrupt()
    wait_until(lambda: node.metric("orchestrator_registry_errors_total") == 1, "registry error")
    assert node.pid("replica") == replica
    assert node.metric("orchestrator_registry_version") == 1
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 1
    node.write(version="v2")  # the next good version is applied
    node.await_pid("replica", other_than=replica)
    assert node.metric("orchestrator_registry_version") == 3
    assert node.metric("orchestrator_registry_errors_total") == 1


def test_api_boundary_node_runs_ic_boundary_with_its_domain(node: Node) -> None:
    node.start()
    node.write(subnet=None, api_boundary_domain="api1.example")
    first = node.await_pid("ic-boundary")
    info = node.info(443, first)
    assert info["argv"] == ["--tls-hostname", "api1.example", "--crypto-config", "{}"]
    assert info["env"] == {
        "LISTEN_HTTP_ADDR": f"{node.ip}:443",
        "OBS_METRICS_ADDR": f"{node.ip}:9324",
        "REGISTRY_LOCAL_STORE_PATH": str(node.store.path),
    }
    node.write(subnet=None, api_boundary_domain="api2.example")
    second = node.await_pid("ic-boundary", other_than=first)
    assert node.info(443, second)["argv"][1] == "api2.example"
    node.write(subnet=None)
    node.await_stopped("ic-boundary")
    assert node.metric("orchestrator_processes_start_attempts_total", process="ic-boundary") == 2
    assert node.metric("orchestrator_processes_stop_attempts_total", process="ic-boundary") == 2
    assert node.pid("replica") is None


def test_sigterm_stops_every_program_and_exits_0(node: Node) -> None:
    program = node.start("--enable-ic-gateway")
    node.write(subnet_type=SubnetType.CLOUD_ENGINE)
    node.await_pid("replica")
    node.await_pid("ic-gateway")
    orchestrator = psutil.Process(program.process.pid)  # type: ignore[attr-defined]
    children = orchestrator.children(recursive=True)
    assert sorted(p.pid for p in children) == sorted(node.program_pids())
    assert len(children) == 2
    assert program.terminate(timeout=10) == 0  # type: ignore[attr-defined]
    assert [p.pid for p in children if alive(p.pid)] == []
    assert node.program_pids() == []
    assert sorted(p.name for p in (node.data_dir / "run").glob("*.pid")) == []
    log = program.log_text()  # type: ignore[attr-defined]
    assert "received SIGTERM: stopping" in log
    assert "Stopping ic-gateway process" in log and "Stopping replica process" in log
    assert log.index("Stopping ic-gateway process") < log.index("Stopping replica process")


def test_restarted_orchestrator_stops_what_its_predecessor_left(node: Node) -> None:
    first = node.start()
    node.write()
    old_replica = node.await_pid("replica")
    os.kill(first.process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    first.process.wait(5)  # type: ignore[attr-defined]
    assert alive(old_replica)  # its own session: it survived the orchestrator

    second = node.start()
    new_replica = node.await_pid("replica", other_than=old_replica)
    assert not alive(old_replica)
    assert node.program_pids() == [new_replica]
    assert node.info(8080, new_replica)["pid"] == new_replica
    log = second.log_text()  # type: ignore[attr-defined]
    assert f"found replica left by a previous orchestrator: pid {old_replica}" in log
    assert log.index("found replica left") < log.index("Starting new replica process")


def test_second_orchestrator_on_the_same_data_dir_refuses_to_run(
    node: Node, make_loopback_ip, start_program
) -> None:
    node.start()
    node.write()
    replica = node.await_pid("replica")
    other_ip = make_loopback_ip()
    second = start_program(
        "harness.node.orchestrator",
        "--node-id", NODE,
        "--registry-local-store", str(node.store.path),
        "--data-dir", str(node.data_dir),
        "--ic-binary-directory", str(node.bin_dir),
        "--spawn", "exec",
        "--metrics-listen-addr", f"{other_ip}:9091",
        "--dashboard-listen-addr", f"{other_ip}:7070",
        env={TAG: node.tag},
    )  # fmt: skip
    assert second.process.wait(10) == 1
    assert "is in use by another orchestrator" in second.log_text()
    assert node.pid("replica") == replica and alive(replica)


# ------------------------------------------------------------------------- real programs
def _installed(name: str, module: str) -> bool:
    if not (default_binary_directory() / name).exists():
        return False
    try:
        __import__(module)
    except Exception:
        return False
    return True


@pytest.fixture
def real_node(loopback_ip: str, tmp_path: Path, start_program) -> Iterator[Node]:
    test_node = Node(loopback_ip, tmp_path, default_binary_directory(), start_program)
    yield test_node
    test_node.kill_everything()


@pytest.mark.skipif(
    not _installed("replica", "harness.node.replica.__main__"), reason="no replica program yet"
)
def test_real_replica_follows_the_registry(real_node: Node) -> None:
    node = real_node
    program = node.start()
    node.write()
    first = node.await_pid("replica")
    wait_until(lambda: node.status_version() == "v1", "the real replica healthy at v1")
    node.write(version="v2")
    node.await_pid("replica", other_than=first)
    wait_until(lambda: node.status_version() == "v2", "the real replica healthy at v2")
    assert program.terminate(timeout=15) == 0  # type: ignore[attr-defined]
    assert not alive(first)
    assert node.program_pids() == []


@pytest.mark.skipif(
    not (
        _installed("replica", "harness.node.replica.__main__")
        and _installed("ic-gateway", "harness.node.gateway.__main__")
    ),
    reason="no replica or ic-gateway program yet",
)
def test_real_gateway_serves_the_replica_on_port_80(real_node: Node) -> None:
    node = real_node
    program = node.start("--enable-ic-gateway")
    node.write(subnet_type=SubnetType.CLOUD_ENGINE)
    node.await_pid("ic-gateway")
    wait_until(
        lambda: node.status_version(80, host="gateway.icp") == "v1", "healthy through ic-gateway"
    )
    assert program.terminate(timeout=15) == 0  # type: ignore[attr-defined]
    assert node.program_pids() == []


@pytest.mark.skipif(
    not _installed("ic-boundary", "harness.node.boundary.__main__"),
    reason="no ic-boundary program yet",
)
def test_real_ic_boundary_runs_on_api_boundary_nodes(real_node: Node) -> None:
    node = real_node
    program = node.start()
    node.write(subnet=None, api_boundary_domain="api1.example")
    pid = node.await_pid("ic-boundary")
    wait_until(lambda: node.http.get(f"http://{node.ip}:443/").status_code > 0, "ic-boundary up")
    assert node.pid("ic-boundary") == pid  # it did not crash
    assert program.terminate(timeout=15) == 0  # type: ignore[attr-defined]
    assert node.program_pids() == []


@pytest.mark.skipif(
    not _installed("replica", "harness.node.replica.__main__"), reason="no replica program yet"
)
def test_a_dead_fork_server_takes_its_programs_supervision_with_it_cleanly(
    real_node: Node,
) -> None:
    """The fork server dies: the replica it forked is stopped (nothing unsupervised stays) and
    started again, as after a crash, from a new fork server."""
    node = real_node
    program = node.start()
    node.write()
    first = node.await_pid("replica")
    wait_until(lambda: node.status_version() == "v1", "the replica healthy")
    server = psutil.Process(first).ppid()
    assert "forkserver" in psutil.Process(server).name()
    os.kill(server, signal.SIGKILL)
    second = node.await_pid("replica", other_than=first)
    wait_until(lambda: node.status_version() == "v1", "the new replica healthy")
    assert not alive(first)
    new_server = psutil.Process(second).ppid()
    assert new_server != server and "forkserver" in psutil.Process(new_server).name()
    assert node.metric("orchestrator_processes_start_attempts_total", process="replica") == 2
    assert program.terminate(timeout=15) == 0  # type: ignore[attr-defined]
    assert node.program_pids() == []
