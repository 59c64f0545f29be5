"""Handles on the nodes of a running testnet: URLs, status, health waits, metrics, dashboard,
and faults on the node's programs."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from harness.driver.errors import HarnessError, MetricsScrapeError, NodeNotReady
from harness.driver.metrics_check import Sample, parse_metrics
from harness.driver.waits import wait_until
from harness.node.status import STATUS_PATH, StatusResponse, decode_status

if TYPE_CHECKING:
    from harness.driver.testnet import Testnet

REPLICA_PORT = 8080
GATEWAY_PORT = 80
BOUNDARY_PORT = 443
REPLICA_METRICS_PORT = 9090
ORCHESTRATOR_METRICS_PORT = 9091
DASHBOARD_PORT = 7070
IC_GATEWAY_DOMAIN = "gateway.icp"
STATUS_REQUEST_TIMEOUT = 6.0
DEFAULT_WAIT_TIMEOUT = 30.0


class NotHealthy(HarnessError):
    """A status answered, but the replica is not healthy (yet)."""


class Node:
    """One node of a testnet. Its subnet is read from the latest registry version."""

    def __init__(self, testnet: Testnet, node_id: str, ip: str, domain: str | None) -> None:
        self.testnet = testnet
        self.node_id = node_id
        self.ip = ip
        self.initial_domain = domain

    def __repr__(self) -> str:
        return f"Node({self.node_id} @ {self.ip})"

    @property
    def subnet_id(self) -> str | None:
        return self.testnet.registry.latest().subnet_of(self.node_id)

    @property
    def domain(self) -> str | None:
        return self.testnet.registry.latest().node_domain(self.node_id)

    def url(self, port: int = REPLICA_PORT, path: str = "") -> str:
        host, real_port = self.testnet.backend.endpoint(self.node_id, port)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{real_port}{path}"

    def host_header(self, port: int) -> str | None:
        """The Host a program on `port` expects: ic-gateway and ic-boundary validate it."""
        if port == GATEWAY_PORT:
            return IC_GATEWAY_DOMAIN
        if port == BOUNDARY_PORT:
            return self.domain
        return None

    def get(self, port: int, path: str, timeout: float = STATUS_REQUEST_TIMEOUT) -> httpx.Response:
        """GET `path` on `port` of the node, with the Host header that port needs."""
        host = self.host_header(port)
        headers = {"host": host} if host else {}
        return self.testnet.http.get(self.url(port, path), headers=headers, timeout=timeout)

    def status(self, port: int = REPLICA_PORT) -> StatusResponse:
        """Fetch and decode `/api/v2/status`; raise on HTTP errors and non-CBOR bodies."""
        response = self.get(port, STATUS_PATH)
        if response.status_code >= 400:
            raise HarnessError(
                f"status check failed with {response.status_code}: `{response.text[:200]}`"
            )
        return decode_status(response.content)

    def await_status_is_healthy(
        self,
        port: int = REPLICA_PORT,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        version: str | None = None,
    ) -> StatusResponse:
        """Wait until the status says healthy (and, if given, reports `version`)."""
        what = "healthy" if version is None else f"healthy at version {version}"
        return self.await_status(
            lambda s: s.is_healthy and (version is None or s.impl_version == version),
            what,
            port,
            timeout,
        )

    def await_status(
        self,
        condition: Callable[[StatusResponse], bool],
        what: str,
        port: int = REPLICA_PORT,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> StatusResponse:
        """Wait until the decoded status satisfies `condition`; the timeout names `what` and
        the last status seen."""

        def check() -> StatusResponse:
            status = self.status(port)
            if not condition(status):
                raise NotHealthy(
                    f"not {what} yet: health {status.replica_health_status}, "
                    f"version {status.impl_version}"
                )
            return status

        return wait_until(
            check,
            f"await status {what} of {self.node_id} at {self.url(port, STATUS_PATH)}",
            timeout,
        )

    def await_status_is_unavailable(
        self, port: int = REPLICA_PORT, timeout: float = DEFAULT_WAIT_TIMEOUT
    ) -> None:
        """Wait until `/api/v2/status` fails 3 times in a row (connection refused or 5xx)."""
        failures = 0

        def check() -> bool | None:
            nonlocal failures
            try:
                response = self.get(port, STATUS_PATH, timeout=1.0)
            except httpx.TransportError:
                failures += 1
            else:
                if response.status_code >= 500:
                    failures += 1
                else:
                    failures = 0
                    raise HarnessError(f"status still answers {response.status_code}")
            return True if failures >= 3 else None

        wait_until(
            check,
            f"await_status_is_unavailable of {self.node_id} at {self.url(port, STATUS_PATH)}",
            timeout,
        )

    def metrics_text(
        self, port: int = REPLICA_METRICS_PORT, timeout: float = STATUS_REQUEST_TIMEOUT
    ) -> str:
        url = self.url(port, "/metrics")
        try:
            response = self.testnet.http.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            raise MetricsScrapeError(f"scraping {url} of {self.node_id} failed: {exc!r}") from exc
        if response.status_code != 200:
            raise MetricsScrapeError(
                f"scraping {url} of {self.node_id} answered {response.status_code}"
            )
        return response.text

    def metrics(self, port: int = REPLICA_METRICS_PORT) -> list[Sample]:
        """Scrape and parse the node's metrics on `port` (9090 replica, 9091 orchestrator)."""
        return parse_metrics(self.metrics_text(port), f"{self.node_id}:{port}")

    def metric(self, name: str, port: int = REPLICA_METRICS_PORT, **labels: str) -> float:
        """The value of one series; 0 when the series does not exist (yet)."""
        for sample in self.metrics(port):
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return 0.0

    def process_start_attempts(self, process: str = "replica") -> int:
        return int(
            self.metric(
                "orchestrator_processes_start_attempts_total",
                ORCHESTRATOR_METRICS_PORT,
                process=process,
            )
        )

    def dashboard(self) -> dict[str, str]:
        """The orchestrator's dashboard (port 7070) as a dict of its `key: value` lines."""
        response = self.testnet.http.get(self.url(DASHBOARD_PORT, "/"), timeout=5.0)
        response.raise_for_status()
        lines = (line.partition(": ") for line in response.text.splitlines())
        return {key.strip(): value.strip() for key, sep, value in lines if sep}

    def process_pid(self, process: str) -> int | None:
        """The pid of one of the node's programs as the orchestrator reports it, or None."""
        value = self.dashboard().get(f"{process} process id", "None")
        return None if value == "None" else int(value)

    def await_process(self, process: str, running: bool, timeout: float = 10.0) -> int | None:
        """Wait until the orchestrator reports `process` running (returns its pid) or not."""

        def check() -> int | bool | None:
            pid = self.process_pid(process)
            if running:
                return pid
            return True if pid is None else None

        result = wait_until(
            check,
            f"{process} {'running' if running else 'stopped'} on {self.node_id}",
            timeout,
        )
        return result if running and isinstance(result, int) else None

    # Faults (undone by `Testnet.heal_all()` after every test).
    def pause(self) -> None:
        self.testnet.pause_node(self.node_id)

    def resume(self) -> None:
        self.testnet.resume_node(self.node_id)

    def partition(self) -> None:
        self.testnet.partition_node(self.node_id)

    def heal(self) -> None:
        self.testnet.heal_node(self.node_id)

    def stop(self) -> None:
        self.testnet.stop_node(self.node_id)

    def start(self, timeout: float = 60.0) -> None:
        self.testnet.start_node(self.node_id, timeout)

    def restart(self, timeout: float = 60.0) -> None:
        self.testnet.restart_node(self.node_id, timeout)

    def set_replica_faults(self, **knobs: object) -> None:
        """Turn on the replica's fault knobs (`fail_at_start`, `unhealthy`, `delay_seconds`,
        `critical_errors`; see `harness.node.replica`); no knobs clears them."""
        self.testnet.set_replica_faults(self.node_id, knobs)

    def kill_process(self, process: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` (default SIGKILL) to one program of the node; return its pid."""
        return self.testnet.backend.kill_process(self.node_id, process, sig)

    def await_healthy_everywhere(self, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Healthy on 8080, and on 80 if the node runs ic-gateway."""
        self.await_status_is_healthy(REPLICA_PORT, timeout)
        if self.testnet.expects_gateway(self.node_id):
            self.await_status_is_healthy(GATEWAY_PORT, timeout)


__all__ = ["Node", "NodeNotReady"]
