"""The access proxy: a container of the node image on the testnet's overlay running
`microsocks` (SOCKS5), its port published on loopback only, through which the harness reaches
every node by its name; and the overlay's DNS, as asked from that container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import docker.errors
import requests
from docker.models.containers import Container

from harness.driver.backends.engine import (
    NODE_LABEL,
    PUBLISH_HOST,
    HarnessContainer,
    exec_in,
    published_port,
)
from harness.driver.backends.swarm.services import TINI
from harness.driver.errors import HarnessError
from harness.driver.socks import socks5_answers
from harness.driver.waits import wait_until

PROXY_PORT = 1080


def start_access(
    image: str, name: str, labels: Mapping[str, str], network: str, timeout: float
) -> Container:
    """The access proxy's container, started and answering SOCKS5 (within `timeout` s)."""
    access = HarnessContainer(image).with_name(name)
    access.with_kwargs(
        entrypoint=[TINI, "--", "microsocks", "-i", "0.0.0.0", "-p", str(PROXY_PORT)],
        labels={**labels, NODE_LABEL: "access"},
        network=network,
    )
    ports: dict[str, Any] = access.ports
    ports[f"{PROXY_PORT}/tcp"] = (PUBLISH_HOST, None)  # random host port, loopback only
    access.start()
    container = access.get_wrapped_container()

    def mapped() -> int:
        container.reload()
        if container.status != "running":
            raise HarnessError(f"the access proxy container is {container.status}")
        return published_port(container, PROXY_PORT)

    port = wait_until(mapped, "the access proxy's published port", 10.0, 0.1)
    # Published is not listening: until microsocks listens, the engine's port accepts and
    # closes, and a request through it fails ("Malformed reply" from socksio).
    wait_until(
        lambda: socks5_answers(PUBLISH_HOST, port) or None,
        f"the access proxy answering SOCKS5 on {PUBLISH_HOST}:{port}",
        timeout,
        0.05,
    )
    return container


def proxy_url(access: Container) -> str:
    """The access proxy's URL on this machine (`socks5://127.0.0.1:PORT`)."""
    return f"socks5://{PUBLISH_HOST}:{published_port(access, PROXY_PORT)}"


def resolve(access: Container, name: str) -> str | None:
    """What `name` resolves to on the overlay (asked in the access proxy's container), or None
    when it does not."""
    try:
        code, output = exec_in(access, ["getent", "hosts", name])
    except (docker.errors.DockerException, requests.RequestException):
        return None
    return output.decode(errors="replace").strip() or None if code == 0 else None
