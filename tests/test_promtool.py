"""`promtool check metrics` on every metrics endpoint of the node programs.

Each program runs for real on the test's loopback address and serves some traffic first
(answers, rejects, errors, a failed upstream), so that its counters with labels and its
histograms have samples: promtool lints only families that have some. What promtool says about
a scrape must be nothing, or lints that `ALLOWED_LINTS` lists (a name that mirrors the real IC
program's on purpose, each entry saying why); a parse error always fails.

- replica (9090), ic-gateway (9325) and ic-boundary (9324) each exec'd on their own
  (`python -m`, through `start_program`);
- a node as the orchestrator runs it: two orchestrators (9091) on one registry, a cloud-engine
  node (replica and ic-gateway forked by its fork server) and an API boundary node
  (ic-boundary). Both ways, because what prometheus_client exposes differs: a program exec'd on
  its own has a `<name>_created` gauge beside every counter and histogram, a forked one none (a
  fork server imports the replica, whose metrics module turns them off process-wide).
- every family each program declares, in-process with one sample each, so families the traffic
  does not reach (`orchestrator_tasks_failed_total`) are linted too.

promtool comes with Debian's prometheus package, which `scripts/install-test-tools` installs (as
root; `.ci/run` runs it). Without it these tests skip saying so, as the docker-registry test
does (`pytest -rs` lists why).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cbor2
import httpx
import psutil
import pytest
from conftest import Program
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from harness.driver.backends.local_addresses import port_80_allowed
from harness.node.boundary.metrics import BoundaryMetrics
from harness.node.boundary.routing import Balancer, Replica, RoutingTable
from harness.node.catalog import IC_GATEWAY_DOMAIN
from harness.node.gateway.metrics import GatewayMetrics
from harness.node.layout import UNPRIVILEGED_IC_GATEWAY_PORT, Port
from harness.node.orchestrator.args import default_binary_directory
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.registry import (
    ApiBoundaryNodeRecord,
    LocalStore,
    NodeRecord,
    RegistrySnapshot,
    SubnetRecord,
    SubnetType,
)
from harness.node.replica.metrics import ReplicaMetrics
from harness.node.status import ReplicaHealthStatus, decode_status

T = TypeVar("T")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: run scripts/install-test-tools as root "
    "(it installs Debian's prometheus package, as .ci/run does)",
)

CANISTER = "rwlgt-iiaaa-aaaaa-aaaaa-cai"
ENVELOPE = cbor2.dumps({"content": {"request_type": "query", "canister_id": b"\x00"}})
CBOR = {"content-type": "application/cbor"}
GATEWAY_DOMAIN = "ic0.test"
BOUNDARY_DOMAIN = "api0.test"
VERSION = "v1"


# --------------------------------------------------------------------------- the allow-list
@dataclass(frozen=True)
class AllowedLint:
    """A lint promtool may report about one metric, and why the name stays as it is."""

    metric: str
    problem: str
    why: str


ALLOWED_LINTS: tuple[AllowedLint, ...] = (
    # Declared in harness/node/gateway/metrics.py. The real ic-gateway's request histogram is
    # `ic_gateway_http_duration_sec` (registry prefix `ic_gateway`, dfinity/ic-gateway
    # src/metrics): queries and dashboards written for the real gateway must find ours, so the
    # name keeps its `_sec`.
    AllowedLint(
        "ic_gateway_http_duration_sec",
        "metric names should not contain abbreviated units",
        "the real ic-gateway's name for its request histogram",
    ),
)


def allowed_by(lint: str) -> AllowedLint | None:
    """The entry of `ALLOWED_LINTS` that allows a lint line (`<metric> <problem>`), if any."""
    metric, _, problem = lint.partition(" ")
    # prometheus_client's `<name>_created` gauge (a program exec'd on its own has one beside
    # each counter and histogram) carries its metric's name, and promtool lints it as well.
    names = {metric, metric.removesuffix("_created")}
    return next((a for a in ALLOWED_LINTS if a.problem == problem and a.metric in names), None)


# --------------------------------------------------------------------------- promtool
@dataclass(frozen=True)
class Verdict:
    """What `promtool check metrics` said: its exit code (0 clean, 3 lints only, 1 a parse
    error) and its output lines (a lint is `<metric> <problem>`)."""

    returncode: int
    lines: tuple[str, ...]


def promtool_check(text: str) -> Verdict:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    return Verdict(done.returncode, tuple(line for line in output.splitlines() if line.strip()))


def check_exposition(text: str, where: str) -> set[AllowedLint]:
    """Fail unless promtool parses `text` and every lint it reports is allowed; return the
    entries of the allow-list that were needed."""
    verdict = promtool_check(text)
    said = "\n".join(verdict.lines)
    assert verdict.returncode in (0, 3), (
        f"promtool check metrics failed on {where} (exit {verdict.returncode}):\n{said}\n"
        f"--- the exposition ---\n{text}"
    )
    assert (verdict.returncode == 3) == bool(verdict.lines), f"{where}: exit 3 iff lints:\n{said}"
    unexpected = [line for line in verdict.lines if allowed_by(line) is None]
    assert not unexpected, (
        f"promtool's lints on {where} that ALLOWED_LINTS does not allow (fix the metric, or, "
        f"if its name mirrors the real program's, allow it there saying why):\n"
        + "\n".join(unexpected)
    )
    return {entry for line in verdict.lines if (entry := allowed_by(line)) is not None}


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response
    return response.text


def sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def sample_value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def assert_samples(text: str, where: str, *names: str) -> None:
    """The traffic reached these families (else promtool would not have linted them)."""
    missing = set(names) - sample_names(text)
    assert not missing, f"{where} has no samples of {sorted(missing)}:\n{text}"


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            result, last = None, exc
        if result is not None and result is not False:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def healthy_status(url: str, host: str | None = None) -> bool:
    response = httpx.get(url, headers={"host": host} if host else None, timeout=5)
    return response.status_code == 200 and decode_status(response.content).is_healthy


def gateway_port(ip: str) -> int:
    """80 where this process may bind it, else the one the local backend uses then."""
    return Port.IC_GATEWAY if port_80_allowed(ip) else UNPRIVILEGED_IC_GATEWAY_PORT


# --------------------------------------------------------------------------- traffic
def replica_traffic(base: str) -> None:
    """Answers, rejects and errors of every kind the replica counts."""
    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/api/v2/status").status_code == 200
        client.post(f"/api/v2/canister/{CANISTER}/query", content=ENVELOPE, headers=CBOR)
        client.post(f"/api/v3/canister/{CANISTER}/call", content=b"not cbor", headers=CBOR)
        assert client.get("/nowhere").status_code == 404
        assert client.put("/api/v2/status").status_code == 405


def gateway_traffic(base: str, domain: str) -> None:
    """Proxied answers, the gateway's own answers and refusals."""
    with httpx.Client(base_url=base, headers={"host": domain}, timeout=10) as client:
        assert client.get("/api/v2/status").status_code == 200
        client.post(f"/api/v2/canister/{CANISTER}/query", content=ENVELOPE, headers=CBOR)
        client.get("/health")
        client.get("/api/v2/status", headers={"host": "unknown.example"})  # 400: unknown domain
        client.get("/nowhere")


def boundary_traffic(base: str, domain: str) -> None:
    with httpx.Client(base_url=base, headers={"host": domain}, timeout=10) as client:
        assert client.get("/api/v2/status").status_code == 200
        client.post(f"/api/v2/canister/{CANISTER}/query", content=ENVELOPE, headers=CBOR)
        client.post("/api/v2/subnet/nosuch/read_state", content=ENVELOPE, headers=CBOR)
        client.get("/health")
        client.get("/nowhere")


# --------------------------------------------------------------------------- programs exec'd
def start_replica(start_program: Callable[..., Program], ip: str) -> Program:
    program = start_program(
        "harness.node.replica",
        f"--http-listen={ip}:{Port.REPLICA_HTTP}",
        f"--metrics-listen={ip}:{Port.REPLICA_METRICS}",
        f"--replica-version={VERSION}",
        "--node-id=n1",
        "--subnet-id=s1",
        ready_url=f"http://{ip}:{Port.REPLICA_METRICS}/metrics",
    )
    status = f"http://{ip}:{Port.REPLICA_HTTP}/api/v2/status"
    wait_until(lambda: healthy_status(status), "the replica healthy")
    return program


def test_replica_metrics_pass_promtool(
    start_program: Callable[..., Program], loopback_ip: str
) -> None:
    start_replica(start_program, loopback_ip)
    replica_traffic(f"http://{loopback_ip}:{Port.REPLICA_HTTP}")
    for path in ("/", "/metrics"):  # the IC driver scrapes the root
        where = f"the replica's {path} on {Port.REPLICA_METRICS}"
        text = scrape(f"http://{loopback_ip}:{Port.REPLICA_METRICS}{path}")
        assert_samples(
            text,
            where,
            "replica_http_health_status_state_transitions_total",
            "replica_http_requests_total",
            "replica_http_request_duration_seconds_bucket",
            "critical_errors_total",
        )
        assert check_exposition(text, where) == set()


def test_gateway_metrics_pass_promtool(
    start_program: Callable[..., Program], loopback_ip: str
) -> None:
    replica = start_replica(start_program, loopback_ip)
    port = gateway_port(loopback_ip)
    metrics_url = f"http://{loopback_ip}:{Port.IC_GATEWAY_METRICS}/metrics"
    start_program(
        "harness.node.gateway",
        env={
            "LISTEN_PLAIN": f"{loopback_ip}:{port}",
            "IC_URL": f"http://{loopback_ip}:{Port.REPLICA_HTTP}",
            "DOMAIN": GATEWAY_DOMAIN,
            "METRICS_LISTEN": f"{loopback_ip}:{Port.IC_GATEWAY_METRICS}",
            "IC_REQUEST_RETRY_INTERVAL": "10ms",
        },
        ready_url=metrics_url,
    )
    base = f"http://{loopback_ip}:{port}"
    gateway_traffic(base, GATEWAY_DOMAIN)
    replica.terminate()  # and one request the replica can no longer answer
    response = httpx.get(f"{base}/api/v2/status", headers={"host": GATEWAY_DOMAIN}, timeout=10)
    assert response.status_code >= 500
    text = scrape(metrics_url)
    assert_samples(
        text,
        "ic-gateway's metrics",
        "ic_gateway_http_total",
        "ic_gateway_http_duration_sec_bucket",
        "ic_gateway_upstream_requests_total",
    )
    assert sample_value(text, "ic_gateway_http_total", error="none", status="200")
    assert sample_value(text, "ic_gateway_upstream_requests_total", outcome="backend_error_connect")
    used = check_exposition(text, "ic-gateway's metrics")
    # The histogram is linted (it has samples) and the entry allowing its name is still needed.
    assert {entry.metric for entry in used} == {"ic_gateway_http_duration_sec"}


def test_boundary_metrics_pass_promtool(
    start_program: Callable[..., Program], loopback_ip: str
) -> None:
    replica = start_replica(start_program, loopback_ip)
    metrics_url = f"http://{loopback_ip}:{Port.IC_BOUNDARY_METRICS}/metrics"
    start_program(
        "harness.node.boundary",
        "--tls-hostname", BOUNDARY_DOMAIN,
        "--listen-http-addr", f"{loopback_ip}:{Port.IC_BOUNDARY}",
        "--obs-metrics-addr", f"{loopback_ip}:{Port.IC_BOUNDARY_METRICS}",
        "--upstreams", f"s1=http://{loopback_ip}:{Port.REPLICA_HTTP}",
        # One probe at the start and none for a minute: the replica stopped below is still
        # taken for healthy, so the request after it is a failed forward.
        "--health-check-interval", "60s",
        ready_url=metrics_url,
    )  # fmt: skip
    wait_until(
        lambda: sample_value(scrape(metrics_url), "ic_boundary_healthy_replicas", subnet="s1"),
        "ic-boundary's probe of the replica",
    )
    base = f"http://{loopback_ip}:{Port.IC_BOUNDARY}"
    boundary_traffic(base, BOUNDARY_DOMAIN)
    replica.terminate()
    httpx.get(f"{base}/api/v2/status", headers={"host": BOUNDARY_DOMAIN}, timeout=10)
    text = scrape(metrics_url)
    assert_samples(
        text,
        "ic-boundary's metrics",
        "ic_boundary_requests_total",
        "ic_boundary_request_duration_seconds_bucket",
        "ic_boundary_upstream_errors_total",
        "ic_boundary_replicas",
        "ic_boundary_healthy_replicas",
    )
    assert check_exposition(text, "ic-boundary's metrics") == set()


# --------------------------------------------------------------------------- a node, forked
TAG = "PROMTOOL_TEST_NODE"  # in every process of this test's orchestrators


@pytest.fixture
def node_tag(tmp_path: Path) -> Iterator[str]:
    """A tag the orchestrators' programs inherit; whatever still has it afterwards is killed
    (programs forked by a fork server are in no orchestrator's process group)."""
    tag = str(tmp_path)
    yield tag
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if process.pid != os.getpid() and process.environ().get(TAG) == tag:
                process.kill()


def test_a_node_run_by_orchestrators_passes_promtool(
    start_program: Callable[..., Program],
    make_loopback_ip: Callable[[], str],
    tmp_path: Path,
    node_tag: str,
) -> None:
    """A cloud-engine node (replica and ic-gateway) and an API boundary node (ic-boundary), as
    their orchestrators run them: each program forked by its orchestrator's fork server."""
    engine_ip, boundary_ip = make_loopback_ip(), make_loopback_ip()
    store = LocalStore(tmp_path / "registry")
    store.write(
        RegistrySnapshot(
            1,
            subnets={"engine": SubnetRecord(SubnetType.CLOUD_ENGINE, ("engine-node",), VERSION)},
            nodes={
                "engine-node": NodeRecord(engine_ip),
                "api-node": NodeRecord(boundary_ip, domain=BOUNDARY_DOMAIN),
            },
            api_boundary_nodes={"api-node": ApiBoundaryNodeRecord(VERSION)},
        )
    )
    port = gateway_port(engine_ip)
    orchestrators = [
        start_program(
            "harness.node.orchestrator",
            "--node-id", node_id,
            "--registry-local-store", str(store.path),
            "--data-dir", str(tmp_path / node_id),
            "--ic-binary-directory", str(default_binary_directory()),
            "--spawn", "fork",
            "--metrics-listen-addr", f"{ip}:{Port.ORCHESTRATOR_METRICS}",
            "--dashboard-listen-addr", f"{ip}:{Port.DASHBOARD}",
            "--registry-poll-interval", "0.05",
            "--version", VERSION,
            "--enable-ic-gateway",
            "--ic-gateway-port", str(port),
            env={TAG: node_tag},
            ready_url=f"http://{ip}:{Port.DASHBOARD}/",
        )
        for node_id, ip in (("engine-node", engine_ip), ("api-node", boundary_ip))
    ]  # fmt: skip
    gateway = f"http://{engine_ip}:{port}"
    boundary = f"http://{boundary_ip}:{Port.IC_BOUNDARY}"
    wait_until(
        lambda: healthy_status(f"{gateway}/api/v2/status", IC_GATEWAY_DOMAIN),
        "the replica healthy through ic-gateway",
    )
    wait_until(
        lambda: healthy_status(f"{boundary}/api/v2/status", BOUNDARY_DOMAIN),
        "the replica healthy through ic-boundary",
    )
    replica_traffic(f"http://{engine_ip}:{Port.REPLICA_HTTP}")
    gateway_traffic(gateway, IC_GATEWAY_DOMAIN)
    boundary_traffic(boundary, BOUNDARY_DOMAIN)

    endpoints = {
        "the cloud-engine node's orchestrator": (engine_ip, Port.ORCHESTRATOR_METRICS, "/"),
        "the API boundary node's orchestrator": (boundary_ip, Port.ORCHESTRATOR_METRICS, "/"),
        "the forked replica": (engine_ip, Port.REPLICA_METRICS, "/"),
        "the forked ic-gateway": (engine_ip, Port.IC_GATEWAY_METRICS, "/metrics"),
        "the forked ic-boundary": (boundary_ip, Port.IC_BOUNDARY_METRICS, "/metrics"),
    }
    scraped = {
        where: scrape(f"http://{ip}:{p}{path}") for where, (ip, p, path) in endpoints.items()
    }
    assert_samples(
        scraped["the cloud-engine node's orchestrator"],
        "the orchestrator's metrics",
        "orchestrator_processes_start_attempts_total",
        "orchestrator_process_restart_backoff_seconds",
        "ic_orchestrator_info",
        "process_start_time_seconds",
    )
    assert (
        sample_value(
            scraped["the cloud-engine node's orchestrator"],
            "orchestrator_processes_start_attempts_total",
            process="ic-gateway",
        )
        == 1
    )
    assert_samples(scraped["the forked ic-gateway"], "ic-gateway", "ic_gateway_http_total")
    assert_samples(scraped["the forked ic-boundary"], "ic-boundary", "ic_boundary_requests_total")
    for where, text in scraped.items():
        check_exposition(text, where)
    for program in orchestrators:
        assert program.terminate(timeout=20) == 0, program.log_text()


# --------------------------------------------------------------------------- every family
def replica_registry() -> CollectorRegistry:
    metrics = ReplicaMetrics(VERSION, "n1", "s1")
    metrics.record_transition(ReplicaHealthStatus.STARTING, ReplicaHealthStatus.HEALTHY)
    metrics.raise_critical_errors_to(1)
    metrics.record_request("status", "GET", 200, 0.001)
    return metrics.registry


def gateway_registry() -> CollectorRegistry:
    metrics = GatewayMetrics()
    metrics.observe("GET", "HTTP/1.1", 200, "none", "127.0.0.1:8080", 0.002)
    metrics.attempted("127.0.0.1:8080", "backend_error_connect")
    return metrics.registry


def boundary_registry() -> CollectorRegistry:
    replica = Replica("n1", "http://127.0.0.1:8080")
    balancer = Balancer(RoutingTable({"s1": (replica,)}, 3))
    balancer.set_healthy([replica])
    metrics = BoundaryMetrics(balancer)
    metrics.observe("POST", "query", 200, "s1", 0.003)
    metrics.upstream_errors.labels("s1", "connect").inc()
    metrics.registry_errors.inc()
    return metrics.registry


def orchestrator_registry() -> CollectorRegistry:
    metrics = OrchestratorMetrics(VERSION, ["replica", "ic-gateway", "ic-boundary"])
    metrics.tasks_failed.labels("registry_replicator", "panic").inc()
    metrics.failed_consecutive_upgrade_checks.inc()
    metrics.processes_start_attempts.labels("replica").inc()
    metrics.registry_errors.inc()
    return metrics.registry


@pytest.mark.parametrize(
    "make_registry",
    [replica_registry, gateway_registry, boundary_registry, orchestrator_registry],
    ids=["replica", "ic-gateway", "ic-boundary", "orchestrator"],
)
def test_every_declared_family_passes_with_a_sample(
    make_registry: Callable[[], CollectorRegistry],
) -> None:
    text = generate_latest(make_registry()).decode()
    empty = [f.name for f in text_string_to_metric_families(text) if not f.samples]
    assert not empty, (
        f"families without a sample, which promtool would not lint: {empty}; give each one "
        f"in {make_registry.__name__}"
    )
    check_exposition(text, f"every family of {make_registry.__name__}()")


# --------------------------------------------------------------------------- the checker itself
def test_promtool_and_the_allow_list_catch_what_they_should() -> None:
    """The checks above can fail: a parse error, and lints nobody allowed (here also on a
    metric of the allow-list, for another problem)."""
    with pytest.raises(AssertionError, match="exit 1"):
        check_exposition('broken{label="x" 1\n', "a broken exposition")
    bad = (
        "# HELP requests_served Requests.\n# TYPE requests_served counter\nrequests_served 1\n"
        "# TYPE latency_ms gauge\nlatency_ms 2\n"
        "# HELP ic_gateway_http_duration_sec Time.\n"
        "# TYPE ic_gateway_http_duration_sec counter\nic_gateway_http_duration_sec 3\n"
    )
    with pytest.raises(AssertionError) as raised:
        check_exposition(bad, "a bad exposition")
    message = str(raised.value)
    for lint in (
        'requests_served counter metrics should have "_total" suffix',
        "latency_ms no help text",
        "latency_ms metric names should not contain abbreviated units",
        'ic_gateway_http_duration_sec counter metrics should have "_total" suffix',
    ):
        assert lint in message
    # ... while the allowed one is not reported as unexpected.
    unexpected = message.split("allow it there saying why):\n", 1)[1]
    assert "ic_gateway_http_duration_sec metric names should not" not in unexpected
