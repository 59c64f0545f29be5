"""The swarm backend: it needs a manager, publishes nothing but its access proxy (on loopback),
places nodes by machine label, fails fast on a node no machine can take, and leaves nothing
with its run label behind. The systests run on it as a whole with `--backend swarm`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import engines
import pytest

from harness.driver import (
    BackendUnavailable,
    InternetComputer,
    NodeStartError,
    Run,
    Subnet,
    SubnetType,
    Testnet,
)
from harness.driver.backends import engine as engine_module
from harness.driver.backends import swarm as swarm_backend
from harness.driver.backends.engine import engine
from harness.driver.backends.swarm import SwarmBackend
from harness.driver.backends.swarm import tasks as swarm_tasks
from harness.driver.waits import wait_until


class FakeEngine:
    def __init__(self, swarm: dict[str, Any]) -> None:
        self.swarm = swarm

    def info(self) -> dict[str, Any]:
        return {"Swarm": self.swarm}


@pytest.mark.parametrize(
    ("swarm", "message"),
    [
        ({"LocalNodeState": "inactive"}, "docker swarm init --advertise-addr 127.0.0.1"),
        (
            {"LocalNodeState": "active", "ControlAvailable": False, "NodeID": "w1"},
            "run the harness on a manager",
        ),
    ],
)
def test_an_engine_that_is_no_swarm_manager_is_refused_saying_what_to_do(
    swarm: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        swarm_backend.swarm_node_id(FakeEngine(swarm))  # type: ignore[arg-type]


def test_a_manager_is_accepted() -> None:
    manager = FakeEngine({"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "m1"})
    assert swarm_backend.swarm_node_id(manager) == "m1"  # type: ignore[arg-type]


needs_swarm = engines.needs_swarm("swarm backend")


@pytest.fixture
def run() -> Iterator[Run]:
    run = Run.create()
    yield run
    run.close()
    SwarmBackend.sweep(lambda run_id: run_id == run.run_id)


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    client = engine()
    yield client
    client.close()


@pytest.fixture
def machine_label(client: docker.DockerClient) -> Iterator[str]:
    """A label only this machine has, `KEY=VALUE`, removed afterwards."""
    key, value = f"harness-test-{uuid.uuid4().hex[:8]}", "yes"
    node = client.nodes.get(swarm_backend.swarm_node_id(client))
    spec = node.attrs["Spec"]
    spec.setdefault("Labels", {})[key] = value
    node.update(spec)
    yield f"{key}={value}"
    node.reload()
    spec = node.attrs["Spec"]
    spec.get("Labels", {}).pop(key, None)
    node.update(spec)


def labelled(client: docker.DockerClient, run_id: str) -> list[str]:
    label = f"{engine_module.RUN_LABEL}={run_id}"
    return (
        [s.name for s in client.services.list(filters={"label": label})]
        + [c.name for c in client.containers.list(all=True, filters={"label": label})]
        + [n.name for n in client.networks.list(filters={"label": label})]
    )


@needs_swarm
def test_nodes_follow_their_machine_label_and_only_the_proxy_is_published_on_loopback(
    run: Run, client: docker.DockerClient, machine_label: str
) -> None:
    topology = (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE, name="pinned").add_nodes(1).with_ic_gateway())
        .with_machine_label("pinned", machine_label)
    )
    with Testnet(topology, run, backend="swarm").start(timeout=90) as testnet:
        (node,) = testnet.nodes()
        assert node.await_status_is_healthy(port=80, timeout=30).is_healthy
        key, _, value = machine_label.partition("=")
        (service,) = client.services.list(
            filters={
                "label": [
                    f"{engine_module.TESTNET_LABEL}={testnet.testnet_id}",
                    f"{engine_module.NODE_LABEL}={node.node_id}",
                ]
            }
        )
        placement = service.attrs["Spec"]["TaskTemplate"]["Placement"]
        assert placement["Constraints"] == [f"node.labels.{key}=={value}"]
        assert service.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        assert not service.attrs["Endpoint"].get("Ports")  # no node port published anywhere
        bindings = [
            binding
            for container in client.containers.list(
                filters={"label": f"{engine_module.RUN_LABEL}={run.run_id}"}
            )
            for ports in (container.attrs["NetworkSettings"]["Ports"] or {}).values()
            for binding in ports or ()
        ]
        assert bindings, "the access proxy publishes its port"
        assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
        assert testnet.backend.http_proxy == f"socks5://127.0.0.1:{bindings[0]['HostPort']}"
    assert labelled(client, run.run_id) == []


@needs_swarm
def test_a_starting_node_whose_name_the_overlay_lost_gets_a_new_task(
    run: Run, client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A start after a stop can hang two ways, each seen here: the swarm makes no task for the
    service scaled back to 1, or the overlay's DNS has no record of the running task's name.
    The second is made here by taking the task's container off the overlay; the start's wait
    then asks for a new task, and the node comes up under its name. (The first cannot be made
    at will; `tasks.stuck` answers it with the same forced update.)"""
    monkeypatch.setattr(swarm_tasks, "UNRESOLVED_PATIENCE", 2.0)
    monkeypatch.setattr(swarm_tasks, "NO_TASK_PATIENCE", 1.0)
    topology = InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
    with Testnet(topology, run, backend="swarm").start(timeout=90) as testnet:
        (node,) = testnet.nodes()
        backend = testnet.backend
        assert isinstance(backend, SwarmBackend)
        lost = backend._container(node.node_id)
        client.networks.get(backend.network_name).disconnect(lost.id, force=True)
        assert backend._resolve(node.node_id) is None
        with caplog.at_level(logging.WARNING, logger=swarm_backend.__name__):
            backend._await_ready(backend._node(node.node_id))
        assert f"the overlay's DNS has no {node.node_id}" in caplog.text
        assert backend._resolve(node.node_id) is not None
        assert backend._container(node.node_id).id != lost.id  # and it answered, healthy


@needs_swarm
def test_a_node_no_machine_can_take_fails_fast_naming_why(
    run: Run, client: docker.DockerClient
) -> None:
    topology = (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(1))
        .with_machine_label("subnet-0", "harness-no-such-machine=anywhere")
    )
    testnet = Testnet(topology, run, backend="swarm")
    with pytest.raises(NodeStartError, match="the swarm cannot place it: no suitable node"):
        testnet.start(timeout=90)
    assert labelled(client, run.run_id) == []  # start failed: everything torn down


@needs_swarm
def test_leftovers_of_a_run_are_swept_services_first(run: Run, client: docker.DockerClient) -> None:
    topology = InternetComputer().add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(1))
    testnet = Testnet(topology, run, backend="swarm").start(timeout=90)
    assert any(name.endswith("-registry") for name in labelled(client, run.run_id))
    # As if the harness died: nothing of its teardown ran. The sweep removes everything.
    removed = SwarmBackend.sweep(lambda run_id: run_id == run.run_id)
    assert removed[run.run_id] >= 4  # node and registry services, access proxy, network
    # The engine's copy of the removed overlay goes once the services' containers have stopped.
    wait_until(lambda: labelled(client, run.run_id) == [] or None, "the sweep's effect", 30)
    testnet.close()  # nothing left to do, and no error for it
