"""A real Prometheus beside a local testnet (`InternetComputer.with_prometheus()`, `harness up
--prometheus`): every metrics endpoint a target, labelled, up; the targets follow registry
changes; nothing is left running afterwards and the artifacts keep its log and targets. Also:
what a missing or broken binary, and a backend without the capability, say."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from fake_backend import FakeBackend

from harness.driver import (
    CapabilityMissing,
    HarnessError,
    InternetComputer,
    Run,
    Subnet,
    SubnetType,
    Testnet,
)
from harness.driver.prometheus import BINARY_ENV
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
    def at(node_id: str, port: int) -> str:
        host, reached = testnet.endpoint(node_id, port)
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
    with Testnet(topology(), run).start(timeout=30) as testnet:
        url = testnet.prometheus
        assert url is not None and url.startswith("http://127.") and url.endswith(":9090")
        assert testnet.describe()["prometheus"] == url
        (pid,) = prometheus_processes(run)
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
    }
    assert json.loads((artifacts / "topology.json").read_text())["prometheus"] == url


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
    with pytest.raises(CapabilityMissing, match="only on the local backend for now"):
        Testnet(topology(), run, FakeBackend)
    with Testnet(topology().with_prometheus(False), run, FakeBackend) as testnet:
        assert testnet.prometheus is None


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


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


def test_harness_up_prometheus_on_docker_is_refused_at_once(small_topology: Path) -> None:
    result = harness(
        "up", "--once", "--prometheus", "--backend", "docker", "--topology", str(small_topology)
    )
    assert result.returncode == 1
    assert "only on the local backend for now, not on the docker backend" in result.stderr
