"""The Prometheus server beside a docker or swarm testnet (`capabilities.PrometheusBeside`; the
configuration, targets and readiness are `harness.driver.prometheus`'s): a container of the
Prometheus image (`images.build_prometheus_image`: Debian's package, built offline) on the
testnet's network, so that it reaches every node by its alias on the node's own ports, which
stay the same when a node restarts (the ports docker publishes on the host do not). On a swarm
the container runs on this machine and the overlay carries its scrapes to nodes on others.

Its port 9090 is published on 127.0.0.1 only; it runs as the host user (what it writes stays
removable by the run) and carries the testnet's labels, so teardown and the sweep of dead runs
remove it like every other container of the testnet. Its files (configuration, targets, data,
and its log `prometheus.log`) are in one directory of the testnet, bind-mounted.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests
from docker.models.containers import Container

from harness.driver.backends.engine import (
    NODE_LABEL,
    PUBLISH_HOST,
    HarnessContainer,
    published_port,
)
from harness.driver.backends.images import build_prometheus_image
from harness.driver.backends.prometheus_process import LOG_FILE, PORT
from harness.driver.errors import HarnessError
from harness.driver.waits import wait_until

CONTAINER_DIRECTORY = "/prometheus"
CONTAINER_BINARY = "/usr/bin/prometheus"
PORT_MAPPING_TIMEOUT = 10.0


class ContainerServer:
    """Prometheus as the container `<network>-prometheus` on the testnet's docker network
    `network` (at `ip` when given: on a network whose nodes have static addresses, one no node
    uses), with the testnet's `labels`."""

    def __init__(
        self,
        client: docker.DockerClient,
        directory: Path,
        network: str,
        labels: dict[str, str],
        ip: str | None = None,
    ) -> None:
        self.client = client
        self.directory = directory
        self.name = f"{network}-prometheus"
        self.network = network
        self.labels = {**labels, NODE_LABEL: "prometheus"}
        self.ip = ip
        self.listen = f"0.0.0.0:{PORT}"
        self._container: Container | None = None

    def path(self, local: Path) -> str:
        return f"{CONTAINER_DIRECTORY}/{local.relative_to(self.directory).as_posix()}"

    def start(self, arguments: list[str]) -> str:
        image = build_prometheus_image(self.client)
        kwargs: dict[str, Any] = {
            # Its output appended to the log in the mounted directory, as the process's is.
            "entrypoint": [
                "/bin/sh",
                "-c",
                f'exec {CONTAINER_BINARY} "$@" >>{CONTAINER_DIRECTORY}/{LOG_FILE} 2>&1',
                "prometheus",
            ],
            "labels": self.labels,
            "user": f"{os.getuid()}:{os.getgid()}",
            "network": self.network,
        }
        if self.ip is not None:
            kwargs["networking_config"] = {
                self.network: docker.types.EndpointConfig(
                    self.client.api.api_version, ipv4_address=self.ip
                )
            }
        container = (
            HarnessContainer(image)
            .with_name(self.name)
            .with_command(arguments)
            .with_volume_mapping(str(self.directory.resolve()), CONTAINER_DIRECTORY, "rw")
            .with_kwargs(**kwargs)
        )
        ports: dict[str, Any] = container.ports
        ports[f"{PORT}/tcp"] = (PUBLISH_HOST, None)  # random host port, loopback only
        try:
            container.start()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                self.client.containers.get(self.name).remove(force=True)  # created, not started
            raise HarnessError(f"Prometheus: cannot start its container: {exc}") from exc
        self._container = container.get_wrapped_container()

        def mapped() -> int:
            assert self._container is not None
            self._container.reload()
            return published_port(self._container, PORT)

        port = wait_until(mapped, "the Prometheus container's port", PORT_MAPPING_TIMEOUT, 0.1)
        return f"http://{PUBLISH_HOST}:{port}"

    def exit_status(self) -> int | None:
        if self._container is None:
            return None
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return -1
        if self._container.status in ("exited", "dead"):
            code: int = self._container.attrs["State"]["ExitCode"]
            return code
        return None

    def stop(self, grace: float) -> None:
        """Its stop signal (SIGTERM), SIGKILL after `grace`, then removed; safe to call twice."""
        container, self._container = self._container, None
        if container is None:
            return
        with contextlib.suppress(docker.errors.APIError, requests.RequestException):
            container.stop(timeout=max(1, round(grace)))
        with contextlib.suppress(docker.errors.APIError, requests.RequestException):
            container.remove(force=True)
