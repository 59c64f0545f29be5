"""The docker backend end to end: a testnet of containers comes up healthy on loopback-only
ports, survives faults, leaves nothing with its run label behind, and its leftovers are swept."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import docker
import engines
import pytest

from harness.driver import (
    BackendOptions,
    BackendUnavailable,
    InternetComputer,
    NodeStartError,
    Run,
    Subnet,
    SubnetType,
    Testnet,
)
from harness.driver.backends import docker as docker_backend
from harness.driver.backends import engine as engine_module
from harness.driver.backends.engine import engine
from harness.driver.backends.swarm import SwarmBackend
from harness.driver.state import state_root
from harness.driver.waits import wait_until
from harness.node.catalog import NODE_PORTS

needs_docker = engines.needs_docker("docker backend")


def two_nodes() -> InternetComputer:
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())
    )


@pytest.fixture
def run() -> Iterator[Run]:
    run = Run.create()
    yield run
    run.close()
    docker_backend.DockerBackend.sweep(lambda run_id: run_id == run.run_id)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = engine()
    yield client
    client.close()


def labelled(client: docker.DockerClient, run_id: str) -> tuple[list[str], list[str]]:
    label = f"{engine_module.RUN_LABEL}={run_id}"
    containers = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    networks = [n.name for n in client.networks.list(filters={"label": label})]
    return containers, networks


@needs_docker
def test_testnet_comes_up_healthy_on_loopback_and_recovers_from_kill(
    run: Run, client: docker.DockerClient, tmp_path: Path
) -> None:
    with Testnet(two_nodes(), run, backend="docker").start(timeout=60) as testnet:
        backend = testnet.backend
        assert isinstance(backend, docker_backend.DockerBackend)
        system, cloud = testnet.topology_snapshot().subnets
        assert backend.subnet is not None
        assert [n.ip for n in testnet.nodes()] == [
            str(backend.subnet.network_address + 2),
            str(backend.subnet.network_address + 3),
        ]
        assert system.nodes[0].status().is_healthy
        gateway = cloud.nodes[0].status(port=80)  # Host: gateway.icp
        assert gateway.is_healthy
        assert gateway.impl_version == "1.0.0"

        containers = client.containers.list(
            filters={"label": f"{engine_module.RUN_LABEL}={run.run_id}"}
        )
        assert len(containers) == 2
        for container in containers:
            ports = container.attrs["NetworkSettings"]["Ports"]
            assert sorted(ports) == sorted(f"{port}/tcp" for port in NODE_PORTS)
            host_ips = {b["HostIp"] for bindings in ports.values() for b in bindings}
            assert host_ips == {"127.0.0.1"}
            assert container.labels[engine_module.TESTNET_LABEL] == testnet.testnet_id
            mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
            assert mounts["/registry"]["RW"] is False
            assert mounts["/var/lib/node"]["RW"] is True

        node = cloud.nodes[0]
        old = node.process_pid("replica")
        assert old is not None
        assert node.kill_process("replica", signal.SIGKILL) == old

        def new_replica() -> int | None:
            pid = node.process_pid("replica")
            return None if pid in (None, old) else pid

        new = wait_until(new_replica, "a new replica", 30)
        assert new != old
        node.await_ready(30)
        assert node.process_start_attempts("replica") == 2

        artifacts = testnet.collect_artifacts(tmp_path / "artifacts")
        node_dir = artifacts / "nodes" / node.node_id
        assert "orchestrator" in (node_dir / "orchestrator.log").read_text()
        assert (node_dir / "replica.log").stat().st_size > 0
        assert (node_dir / "ic-gateway.log").stat().st_size > 0
    assert labelled(client, run.run_id) == ([], [])


@needs_docker
def test_faults_pause_disconnect_stop_and_orchestrator_signal(
    run: Run, client: docker.DockerClient
) -> None:
    topology = InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
    with Testnet(topology, run, backend="docker").start(timeout=60) as testnet:
        backend = testnet.backend
        assert isinstance(backend, docker_backend.DockerBackend)
        node = testnet.nodes()[0]

        backend.pause_node(node.node_id)
        node.await_status_is_unavailable(timeout=20)
        backend.resume_node(node.node_id)
        node.await_status_is_healthy(timeout=20)

        backend.partition_node(node.node_id)
        node.await_status_is_unavailable(timeout=20)
        backend.heal_node(node.node_id)
        node.await_status_is_healthy(timeout=20)

        backend.stop_node(node.node_id)
        node.await_status_is_unavailable(timeout=20)
        backend.start_node(testnet.plan.nodes[0], testnet.registry.path)
        node.await_status_is_healthy(timeout=20)

        # The orchestrator killed -9: its container goes down and the restart policy brings
        # it back (Restart=always); the new orchestrator runs one replica again.
        pid = backend.kill_process(node.node_id, "orchestrator", signal.SIGKILL)
        assert pid != 1  # the orchestrator, not tini
        node.await_status_is_unavailable(timeout=20)
        assert node.await_status_is_healthy(timeout=60).is_healthy
        # This testnet's container of the node, by its testnet label too: under xdist other
        # tests' testnets have a `subnet-0-node-0` of their own, listed first when newer (the
        # flake of issue 23: their RestartCount, 0, read as this one's).
        (container,) = client.containers.list(
            filters={
                "label": [
                    f"{engine_module.TESTNET_LABEL}={testnet.testnet_id}",
                    f"{engine_module.NODE_LABEL}={node.node_id}",
                ]
            }
        )

        def restarts() -> int | None:
            container.reload()
            count = int(container.attrs["RestartCount"])
            return count or None

        assert wait_until(restarts, "the engine counting the container's restart", 10) == 1
        top = container.top()["Processes"]
        assert sum(1 for row in top if "bin/replica" in " ".join(row)) == 1
        assert node.process_pid("replica") is not None
    assert labelled(client, run.run_id) == ([], [])


@needs_docker
def test_a_node_that_cannot_start_is_a_clear_error(run: Run, client: docker.DockerClient) -> None:
    topology = InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
    testnet = Testnet(topology, run, backend="docker", options=BackendOptions(check_interval=-1))
    with pytest.raises(NodeStartError) as raised:
        testnet.start(timeout=30)
    message = str(raised.value)
    assert message.startswith("node subnet-0-node-0 did not come up: ")
    assert "its container exited" in message
    assert "--check-interval: '-1' must be a positive number of seconds" in message
    assert labelled(client, run.run_id) == ([], [])


@needs_docker
def test_sweep_removes_leftovers_of_dead_runs_only(
    client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A state root of its own: the made-up runs have no owner, so a sweep of the shared root by
    # another xdist worker (a session's start sweeps) would count them dead and take them.
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    base = next(
        tag for image in client.images.list("harness-base") for tag in image.tags
    )  # made by the node image build of the tests above
    made: dict[str, tuple[str, str]] = {}
    for run_id in ("sweep-dead-run", "sweep-live-run"):
        labels = {
            engine_module.RUN_LABEL: run_id,
            engine_module.TESTNET_LABEL: "t",
            engine_module.STATE_ROOT_LABEL: str(state_root()),
            engine_module.BACKEND_LABEL: "docker",
        }
        network = client.networks.create(f"harness-{run_id}", labels=labels)
        container = client.containers.create(
            base, ["sleep", "600"], labels=labels, network=network.name, name=f"harness-{run_id}"
        )
        container.start()
        made[run_id] = (container.name or "", network.name or "")
    try:
        # The swarm backend sweeps its own leftovers only: not the docker backend's.
        assert SwarmBackend.sweep(lambda run_id: True) == {}
        removed = docker_backend.DockerBackend.sweep(lambda run_id: run_id == "sweep-dead-run")
        assert removed["sweep-dead-run"] == 2
        assert "sweep-live-run" not in removed
        assert labelled(client, "sweep-dead-run") == ([], [])
        assert labelled(client, "sweep-live-run") == (
            [made["sweep-live-run"][0]],
            [made["sweep-live-run"][1]],
        )
        assert docker_backend.DockerBackend.sweep(lambda run_id: run_id == "sweep-live-run") == {
            "sweep-live-run": 2
        }
        assert labelled(client, "sweep-live-run") == ([], [])
    finally:
        docker_backend.DockerBackend.sweep(lambda run_id: run_id.startswith("sweep-"))


def test_missing_engine_is_a_clear_error(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(BackendUnavailable) as raised:
        Testnet(two_nodes(), run, backend="docker")
    message = str(raised.value)
    assert message.startswith(
        "the docker backend needs a running Docker engine: cannot reach unix:///nonexistent.sock ("
    )
    assert message.endswith("); use --backend local")
