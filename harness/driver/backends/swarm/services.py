"""The swarm services of a testnet, as the engine is asked for them: one per node (hostname and
network alias its node id) and the registry service, which serves the testnet's registry
directory to the orchestrators from the harness's own machine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import docker
import docker.types
from docker.models.services import Service

from harness.driver.topology import PlannedNode
from harness.node.layout import REGISTRY_SERVICE_PORT

TINI = "/usr/bin/tini"  # the node image's init, for the containers that bypass its entrypoint
REGISTRY_ALIAS = "registry"
REGISTRY_URL = f"http://{REGISTRY_ALIAS}:{REGISTRY_SERVICE_PORT}"  # on the testnet's overlay


def create_node_service(
    client: docker.DockerClient,
    image: str,
    node: PlannedNode,
    *,
    name: str,
    arguments: list[str],
    labels: Mapping[str, str],
    network: str,
    stop_timeout: int,
    binaries: tuple[str, ...] = (),
) -> Service:
    """The node's service: one task of `image` running the orchestrator with `arguments`,
    restarted on failure, on a machine with the node's machine label if it has one; the
    executables of `binaries` (`InternetComputer.with_binary`) mounted read-only at their
    paths (they must be there on every machine)."""
    constraints = []
    if node.machine_label is not None:
        key, _, value = node.machine_label.partition("=")
        constraints.append(f"node.labels.{key}=={value}")
    service: Service = client.services.create(  # type: ignore[no-untyped-call]
        image,
        args=arguments,
        name=name,
        hostname=node.node_id,
        labels=dict(labels),
        container_labels=dict(labels),
        constraints=constraints,
        networks=[docker.types.NetworkAttachmentConfig(network, aliases=[node.node_id])],
        mounts=[docker.types.Mount(path, path, type="bind", read_only=True) for path in binaries],
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        restart_policy=docker.types.RestartPolicy(condition="on-failure"),
        # Docker's SIGKILL comes after the orchestrator's own SIGTERM-then-SIGKILL.
        stop_grace_period=int(stop_timeout * 1e9),
    )
    return service


def create_registry_service(
    client: docker.DockerClient,
    image: str,
    registry_path: Path,
    *,
    name: str,
    labels: Mapping[str, str],
    network: str,
    machine: str,
) -> Service:
    """The registry service, created (not waited for) on swarm node `machine`: it serves
    `registry_path`, which has no version yet (the service answers `latest` 0 until the first
    is written), read-only, at `REGISTRY_URL`."""
    registry_path.mkdir(parents=True, exist_ok=True)  # a bind mount's source must exist
    service: Service = client.services.create(  # type: ignore[no-untyped-call]
        image,
        command=[TINI, "--", "registry-service"],
        args=["--store", "/registry", "--listen", f"0.0.0.0:{REGISTRY_SERVICE_PORT}"],
        name=name,
        labels=dict(labels),
        container_labels=dict(labels),
        mounts=[
            docker.types.Mount(
                "/registry", str(registry_path.resolve()), type="bind", read_only=True
            )
        ],
        constraints=[f"node.id=={machine}"],
        networks=[docker.types.NetworkAttachmentConfig(network, aliases=[REGISTRY_ALIAS])],
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        restart_policy=docker.types.RestartPolicy(condition="any"),
    )
    return service
