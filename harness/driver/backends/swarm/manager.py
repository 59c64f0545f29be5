"""The swarm manager the harness must run on: the engine it talks to is one, or
`BackendUnavailable` says how to make it one."""

from __future__ import annotations

import docker
import docker.errors
import requests

from harness.driver.errors import BackendUnavailable


def swarm_node_id(client: docker.DockerClient) -> str:
    """The swarm node id of the engine the harness talks to, which must be a manager;
    `BackendUnavailable` saying how to get one otherwise."""
    try:
        swarm = client.info().get("Swarm") or {}
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise BackendUnavailable(f"the docker engine does not answer: {exc}") from None
    if swarm.get("LocalNodeState") != "active":
        raise BackendUnavailable(
            "the docker engine is not part of a swarm; make it one with "
            "`docker swarm init --advertise-addr 127.0.0.1` (one machine) or join it to yours"
        )
    if not swarm.get("ControlAvailable"):
        raise BackendUnavailable(
            "the docker engine is a swarm worker; run the harness on a manager of the swarm"
        )
    return str(swarm["NodeID"])
