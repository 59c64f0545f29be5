"""A real Prometheus beside a testnet (`InternetComputer.with_prometheus()`, `harness up
--prometheus`), on every backend: every metrics endpoint a target, labelled, up; the targets
follow registry changes (and, on docker and swarm, a node's restart); what it scraped feeds a
report (`Testnet.metric_samples`); nothing is left running afterwards and the artifacts keep its
log and targets. Also: what a missing or broken binary, and a backend without the capability,
say."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import engines
import httpx
import psutil
import pytest
from fake_backend import FakeBackend
from harness_cli import harness

from harness.driver import (
    CapabilityMissing,
    HarnessError,
    InternetComputer,
    Run,
    Subnet,
    SubnetType,
    Testnet,
)
from harness.driver.backend_registry import get_backend
from harness.driver.backends.capabilities import PrometheusBeside
from harness.driver.backends.engine import RUN_LABEL, engine
from harness.driver.backends.prometheus_process import BINARY_ENV
from harness.driver.run import tagged_processes

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="needs prometheus (Debian package prometheus; as root: scripts/install-test-tools)",
)

# A new target is scraped some seconds after its file changed (Prometheus's 5 s discovery
# ticker, then a 1 s scrape interval).
TARGETS_TIMEOUT = 30.0

Labels = tuple[str, str, str, str, str]  # job, node, subnet ("" for none), role, testnet


def topology() -> InternetComputer:
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())
        .with_prometheus()
    )


@pytest.fixture
def run() -> Iterator[Run]:
    run = Run.create()
    yield run
    run.close()


def prometheus_processes(run: Run) -> list[int]:
    """The pids of the run's live processes named prometheus."""
    alive = []
    for process in tagged_processes().get(run.run_id, []):
        with contextlib.suppress(psutil.Error):
            if process.name() == "prometheus":
                alive.append(process.pid)
    return alive


def active_targets(url: str) -> list[dict[str, object]]:
    response = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, trust_env=False)
    response.raise_for_status()
    targets: list[dict[str, object]] = response.json()["data"]["activeTargets"]
    return targets


def await_targets(url: str, expected: dict[Labels, str]) -> list[dict[str, object]]:
    """Poll Prometheus until its active targets are exactly `expected` (labels -> instance),
    every one of them up; fail with what it last had."""
    deadline = time.monotonic() + TARGETS_TIMEOUT
    seen: object = None
    while time.monotonic() < deadline:
        targets = active_targets(url)
        found = {}
        for target in targets:
            labels = target["labels"]
            assert isinstance(labels, dict)
            key = (
                labels["job"],
                labels["node"],
                labels.get("subnet", ""),  # an empty label is no label in Prometheus
                labels["role"],
                labels["testnet"],
            )
            found[key] = (labels["instance"], target["health"], target["lastError"])
        seen = found
        if set(found) == set(expected) and all(
            instance == expected[key] and health == "up"
            for key, (instance, health, _error) in found.items()
        ):
            return targets
        time.sleep(0.25)
    pytest.fail(f"Prometheus's targets: {seen}; expected, each up: {expected}")


def expected_targets(testnet: Testnet, gateway: bool) -> dict[Labels, str]:
    """Every endpoint, where the backend says its Prometheus reaches it (the local backend: where
    the harness does; docker: the node's address on the testnet's network; swarm: its name)."""
    backend = testnet.backend
    assert isinstance(backend, PrometheusBeside)

    def at(node_id: str, port: int) -> str:
        host, reached = backend.scrape_address(node_id, port)
        return f"{host}:{reached}"

    system, engine = "subnet-0-node-0", "subnet-1-node-0"
    expected = {
        ("replica", system, "subnet-0", "replica", testnet.testnet_id): at(system, 9090),
        ("orchestrator", system, "subnet-0", "replica", testnet.testnet_id): at(system, 9091),
        ("replica", engine, "subnet-1", "replica", testnet.testnet_id): at(engine, 9090),
        ("orchestrator", engine, "subnet-1", "replica", testnet.testnet_id): at(engine, 9091),
    }
    if gateway:
        key = ("ic-gateway", engine, "subnet-1", "replica", testnet.testnet_id)
        expected[key] = at(engine, 9325)
    return expected


@needs_prometheus
def test_prometheus_scrapes_every_endpoint_follows_the_registry_and_leaves_nothing(
    run: Run, tmp_path: Path
) -> None:
    started = time.time()
    with Testnet(topology(), run).start(timeout=30) as testnet:
        url = testnet.prometheus
        assert url is not None and url.startswith("http://127.") and url.endswith(":9090")
        assert testnet.describe()["prometheus"] == url
        (pid,) = prometheus_processes(run)
        # Up means scraped: what it records covers a test from the testnet's first second.
        samples, _ = testnet.metric_samples(time.time() - 3, time.time())
        scraped = {s.node for s in samples if s.series == "up"}
        assert scraped == {"subnet-0-node-0", "subnet-1-node-0"}, samples
        with_gateway = expected_targets(testnet, gateway=True)
        await_targets(url, with_gateway)
        query = httpx.get(
            f"{url}/api/v1/query",
            params={"query": f'up{{testnet="{testnet.testnet_id}"}} == 1'},
            trust_env=False,
        ).json()
        assert len(query["data"]["result"]) == 5

        # The ic-gateway of the cloud-engine node is turned off: its target goes...
        testnet.registry.set_feature("subnet-1-node-0", "ic_gateway", False)
        assert json.loads(
            (testnet.directory / "prometheus" / "targets-ic-gateway.json").read_text()
        ) == []  # fmt: skip
        await_targets(url, expected_targets(testnet, gateway=False))
        # ... and on again, it comes back, and is scraped.
        testnet.registry.set_feature("subnet-1-node-0", "ic_gateway", True)
        await_targets(url, with_gateway)

        # What it scraped over the test is what a report plots.
        assert_scraped_the_nodes(testnet, started)
        artifacts = testnet.collect_artifacts(tmp_path / "artifacts")
    assert prometheus_processes(run) == []
    assert not psutil.pid_exists(pid)
    kept = artifacts / "prometheus"
    assert "Server is ready to receive web requests" in (kept / "prometheus.log").read_text()
    gateways = json.loads((kept / "targets-ic-gateway.json").read_text())
    assert gateways == [
        {
            "targets": [with_gateway[
                ("ic-gateway", "subnet-1-node-0", "subnet-1", "replica", testnet.testnet_id)
            ]],
            "labels": {
                "testnet": testnet.testnet_id,
                "node": "subnet-1-node-0",
                "subnet": "subnet-1",
                "role": "replica",
            },
        }
    ]  # fmt: skip
    assert {p.name for p in kept.iterdir()} == {
        "prometheus.log",
        "prometheus.yml",
        "targets-replica.json",
        "targets-orchestrator.json",
        "targets-ic-gateway.json",
        "targets-ic-boundary.json",
        "data",
    }
    assert_a_tsdb_with_samples(kept / "data")
    assert json.loads((artifacts / "topology.json").read_text())["prometheus"] == url


def assert_a_tsdb_with_samples(data: Path) -> None:
    """`data` is a Prometheus TSDB (its snapshot in the artifacts) holding samples: blocks whose
    `meta.json` count them, and, where promtool is installed, as promtool reads it."""
    metas = [json.loads(meta.read_text()) for meta in data.glob("*/meta.json")]
    assert metas, f"no TSDB block in {data}: {sorted(p.name for p in data.iterdir())}"
    assert sum(meta["stats"]["numSamples"] for meta in metas) > 0, metas
    if shutil.which("promtool") is None:
        return
    listed = subprocess.run(
        ["promtool", "tsdb", "list", str(data)], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    header, *blocks = listed.stdout.splitlines()
    # Columns: BLOCK ULID, MIN TIME, MAX TIME, DURATION, NUM SAMPLES, ... (space-aligned).
    assert header.split()[:2] == ["BLOCK", "ULID"] and "NUM SAMPLES" in header, listed.stdout
    assert len(blocks) == len(metas), listed.stdout
    assert sum(int(block.split()[4]) for block in blocks) > 0, listed.stdout


def assert_scraped_the_nodes(testnet: Testnet, since: float) -> None:
    """What `metric_samples` gives a report comes from Prometheus and shows, in time, every
    endpoint of both nodes up at once (3 of the gateway's node, 2 of the other: a target's
    first scrape can fall after the last point of the range) and every orchestrator's count of
    its programs' starts."""
    deadline = time.monotonic() + 15
    while True:
        samples, sampled_by = testnet.metric_samples(since, time.time())
        assert sampled_by == f"Prometheus ({testnet.prometheus})"
        up = {(s.node, s.value) for s in samples if s.series == "up"}
        if ("subnet-0-node-0", 2.0) in up and ("subnet-1-node-0", 3.0) in up:
            break
        assert time.monotonic() < deadline, up
        time.sleep(0.5)
    starts = {s.node: s.value for s in samples if s.series == "program_starts"}
    assert starts.keys() == {"subnet-0-node-0", "subnet-1-node-0"}, starts
    assert all(value >= 1 for value in starts.values()), starts


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("docker", marks=engines.needs_docker("Prometheus on the docker backend")),
        pytest.param("swarm", marks=engines.needs_swarm("Prometheus on the swarm backend")),
    ],
)
def test_prometheus_in_a_container_scrapes_every_node_across_a_restart(
    run: Run, tmp_path: Path, backend: str
) -> None:
    """On docker and swarm it is a container of its own image on the testnet's network: it
    scrapes the nodes there, so a node's restart (new container, new published ports) changes
    none of its targets; it is removed with the testnet."""
    started = time.time()
    try:
        with Testnet(topology(), run, backend).start(timeout=90) as testnet:
            url = testnet.prometheus
            assert url is not None and url.startswith("http://127.0.0.1:")
            with_gateway = expected_targets(testnet, gateway=True)
            await_targets(url, with_gateway)
            testnet.node("subnet-1-node-0").restart()
            await_targets(url, with_gateway)
            assert_scraped_the_nodes(testnet, started)
            artifacts = testnet.collect_artifacts(tmp_path / "artifacts")
        log = (artifacts / "prometheus" / "prometheus.log").read_text()
        assert "Server is ready to receive web requests" in log
        assert_a_tsdb_with_samples(artifacts / "prometheus" / "data")
        client = engine()
        try:
            left = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run.run_id}"})
            assert [c.name for c in left] == []
        finally:
            client.close()
    finally:
        sweep_run(run, backend)


def sweep_run(run: Run, backend: str) -> None:
    get_backend(backend).sweep(lambda run_id: run_id == run.run_id)


def test_a_missing_binary_says_what_to_install_and_leaves_nothing(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "no-such-prometheus"))
    testnet = Testnet(topology(), run)
    with pytest.raises(HarnessError, match="scripts/install-test-tools") as raised:
        testnet.start(timeout=30)
    assert "no-such-prometheus" in str(raised.value)
    assert testnet.prometheus is None
    assert tagged_processes().get(run.run_id, []) == []


def test_a_prometheus_that_never_gets_ready_shows_its_log(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "prometheus"
    broken.write_text("#!/bin/sh\necho 'err=\"opening storage failed\"' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv(BINARY_ENV, str(broken))
    with pytest.raises(HarnessError) as raised:
        Testnet(topology(), run).start(timeout=30)
    message = str(raised.value)
    assert "Prometheus exited with status 1 before it was ready" in message
    assert "opening storage failed" in message  # the tail of its log
    assert tagged_processes().get(run.run_id, []) == []


def test_a_backend_without_it_refuses_before_anything_starts(run: Run) -> None:
    with pytest.raises(CapabilityMissing, match="cannot run on the fake backend"):
        Testnet(topology(), run, FakeBackend)
    with Testnet(topology().with_prometheus(False), run, FakeBackend) as testnet:
        assert testnet.prometheus is None


@pytest.fixture
def small_topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "net.py"
    path.write_text(
        "from harness.driver import InternetComputer, Subnet, SubnetType\n"
        "topology = InternetComputer().with_name('prom').add_subnet(\n"
        "    Subnet(SubnetType.SYSTEM).add_nodes(1))\n"
    )
    return path


@needs_prometheus
def test_harness_up_prometheus_prints_its_url(small_topology: Path) -> None:
    as_json = harness("up", "--once", "--json", "--prometheus", "--topology", str(small_topology))
    assert as_json.returncode == 0, as_json.stderr
    url = json.loads(as_json.stdout)["prometheus"]
    assert url.startswith("http://127.") and url.endswith(":9090")
    as_text = harness("up", "--once", "--prometheus", "--topology", str(small_topology))
    assert as_text.returncode == 0, as_text.stderr
    assert "Prometheus (scraping every metrics endpoint): http://127." in as_text.stdout
    without = harness("up", "--once", "--json", "--topology", str(small_topology))
    assert json.loads(without.stdout)["prometheus"] is None
    assert tagged_processes() == {}


@engines.needs_docker("harness up --prometheus on the docker backend")
def test_harness_up_prometheus_on_docker_prints_its_url(small_topology: Path) -> None:
    # On a new machine this builds the node image and the Prometheus image first.
    result = harness(
        "up", "--once", "--json", "--prometheus", "--backend", "docker",
        "--topology", str(small_topology), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prometheus"].startswith("http://127.0.0.1:")
