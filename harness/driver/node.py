"""Handles on the nodes of a running testnet: URLs, status, health waits, metrics, dashboard,
and faults on the node (`harness.driver.faults`). A node reaches its testnet only through the
narrow `NodeHost` protocol, so a fake host serves the node's unit tests."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Protocol

import httpx

from harness.driver.errors import HarnessError, MetricsScrapeError, NodeNotReady
from harness.driver.faults import Fault, Partition, Pause, ReplicaFaults, Signal, Stop
from harness.driver.metrics_check import Baseline, Sample, parse_metrics, since_reset
from harness.driver.services import Service, service_on_port, services_on, unready
from harness.driver.waits import wait_until
from harness.node.description import Role, role_of
from harness.node.layout import Port
from harness.node.registry import RegistrySnapshot
from harness.node.status import STATUS_PATH, StatusResponse, decode_status

STATUS_REQUEST_TIMEOUT = 6.0
DEFAULT_WAIT_TIMEOUT = 30.0


class NotHealthy(HarnessError):
    """A status answered, but the replica is not healthy (yet)."""


class NodeHost(Protocol):
    """What a node needs of its testnet (a `Testnet`)."""

    @property
    def http(self) -> httpx.Client:
        """The client that reaches the testnet's nodes."""

    def snapshot(self) -> RegistrySnapshot:
        """The latest registry version."""

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        """Where the harness reaches `port` of the node (host, port)."""

    def inject(self, fault: Fault, timeout: float = 60.0) -> int | None:
        """Apply a fault (see `Testnet.inject`)."""

    def heal(self, kind: type[Fault], node_id: str, timeout: float = 60.0) -> list[Fault]:
        """Undo the faults of `kind` in force on the node (see `Testnet.heal`)."""

    @property
    def baseline(self) -> Baseline:
        """The nodes' metrics at the testnet's last reset (see `Testnet.reset`)."""


class Node:
    """One node of a testnet. Its subnet is read from the latest registry version."""

    def __init__(self, testnet: NodeHost, node_id: str, ip: str, domain: str | None) -> None:
        self.testnet = testnet
        self.node_id = node_id
        self.ip = ip
        self.initial_domain = domain

    def __repr__(self) -> str:
        return f"Node({self.node_id} @ {self.ip})"

    @property
    def subnet_id(self) -> str | None:
        return self.testnet.snapshot().subnet_of(self.node_id)

    @property
    def domain(self) -> str | None:
        return self.testnet.snapshot().node_domain(self.node_id)

    def url(self, port: int = Port.REPLICA_HTTP, path: str = "") -> str:
        host, real_port = self.testnet.endpoint(self.node_id, port)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{real_port}{path}"

    @property
    def role(self) -> Role:
        """Its role in the latest registry version."""
        return role_of(self.testnet.snapshot(), self.node_id)

    def services(self) -> list[Service]:
        """What it serves now, by its role in the latest registry version (as `describe()`
        lists its URLs)."""
        return services_on(self.testnet.snapshot(), self.node_id)

    @property
    def programs(self) -> list[str]:
        """The programs that run on it now as the latest registry version says (`replica`,
        `ic-gateway`, ...; the orchestrator on every node)."""
        return list(dict.fromkeys(s.program.name for s in reversed(self.services())))

    def host_header(self, port: int) -> str | None:
        """The Host the program on `port` answers to (ic-gateway and ic-boundary check it)."""
        snapshot = self.testnet.snapshot()
        service = service_on_port(snapshot, self.node_id, port)
        return None if service is None else service.host(snapshot.node_domain(self.node_id))

    def get(self, port: int, path: str, timeout: float = STATUS_REQUEST_TIMEOUT) -> httpx.Response:
        """GET `path` on `port` of the node, with the Host header that port needs."""
        host = self.host_header(port)
        headers = {"host": host} if host else {}
        return self.testnet.http.get(self.url(port, path), headers=headers, timeout=timeout)

    def status(self, port: int = Port.REPLICA_HTTP) -> StatusResponse:
        """Fetch and decode `/api/v2/status`; raise on HTTP errors and non-CBOR bodies."""
        response = self.get(port, STATUS_PATH)
        if response.status_code >= 400:
            raise HarnessError(
                f"status check failed with {response.status_code}: `{response.text[:200]}`"
            )
        return decode_status(response.content)

    def await_status_is_healthy(
        self,
        port: int = Port.REPLICA_HTTP,
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
        port: int = Port.REPLICA_HTTP,
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
        self, port: int = Port.REPLICA_HTTP, timeout: float = DEFAULT_WAIT_TIMEOUT
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
        self, port: int = Port.REPLICA_METRICS, timeout: float = STATUS_REQUEST_TIMEOUT
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

    def metrics(self, port: int = Port.REPLICA_METRICS) -> list[Sample]:
        """Scrape and parse the node's metrics on `port` (9090 replica, 9091 orchestrator).
        On a testnet reset for reuse (`Testnet.reset`), a counter is its value when the testnet
        was fresh plus its increase since the reset, so a test reads what it would on a fresh
        testnet (`metrics_text` is the scrape as it is)."""
        samples = parse_metrics(self.metrics_text(port), f"{self.node_id}:{port}")
        reference = self.testnet.baseline.get((self.node_id, port))
        return samples if reference is None else since_reset(samples, reference)

    def metric(self, name: str, port: int = Port.REPLICA_METRICS, **labels: str) -> float:
        """The value of one series; 0 when the series does not exist (yet)."""
        for sample in self.metrics(port):
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return 0.0

    def process_start_attempts(self, process: str = "replica") -> int:
        return int(
            self.metric(
                "orchestrator_processes_start_attempts_total",
                Port.ORCHESTRATOR_METRICS,
                process=process,
            )
        )

    def dashboard(self) -> dict[str, str]:
        """The orchestrator's dashboard (port 7070) as a dict of its `key: value` lines."""
        response = self.testnet.http.get(self.url(Port.DASHBOARD, "/"), timeout=5.0)
        response.raise_for_status()
        return parse_dashboard(response.text)

    def reset(self, timeout: float = 10.0) -> dict[str, str]:
        """`POST /reset` to the orchestrator (the harness's own, see `Testnet.reset`): its
        programs forget their crash-loop backoffs; return its dashboard after that."""
        response = self.testnet.http.post(self.url(Port.DASHBOARD, "/reset"), timeout=timeout)
        if response.status_code != 200:
            raise HarnessError(
                f"the reset of {self.node_id}'s orchestrator answered {response.status_code}: "
                f"{response.text.strip()}"
            )
        return parse_dashboard(response.text)

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

    # Faults (`harness.driver.faults`; what is in force is healed after every test).
    def pause(self) -> None:
        """Freeze the node (SIGSTOP / docker pause): it keeps its state, answers nothing."""
        self.testnet.inject(Pause(self.node_id))

    def resume(self) -> None:
        self.testnet.heal(Pause, self.node_id)

    def partition(self) -> None:
        """Cut the node off from every other node and from the harness."""
        self.testnet.inject(Partition(self.node_id))

    def heal(self) -> None:
        self.testnet.heal(Partition, self.node_id)

    def stop(self) -> None:
        """Stop the node gracefully (its orchestrator stops its programs first)."""
        self.testnet.inject(Stop(self.node_id))

    def start(self, timeout: float = 60.0) -> None:
        """Start the stopped node again and wait until it is healthy."""
        self.testnet.heal(Stop, self.node_id, timeout)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def set_replica_faults(self, **knobs: object) -> None:
        """Turn on the replica's fault knobs (`fail_at_start`, `unhealthy`, `delay_seconds`,
        `critical_errors`; see `harness.node.replica`); no knobs clears them. A knob the
        replica does not know, or a bad value, is a `HarnessError`, and nothing changes."""
        faults = ReplicaFaults(self.node_id, knobs) if knobs else None
        self.testnet.heal(ReplicaFaults, self.node_id)
        if faults is not None:
            self.testnet.inject(faults)

    def kill_process(self, process: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` (default SIGKILL) to one program of the node; return its pid."""
        pid = self.testnet.inject(Signal(self.node_id, process, sig))
        assert pid is not None  # a signal acts on a process
        return pid

    def await_ready(self, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait until it is ready as its role says: every service of every program it runs
        now answers ready (`harness.driver.services`): the replica's status healthy on 8080
        and on 80 through ic-gateway on cloud engines, ic-boundary's on an API boundary node,
        the orchestrator's dashboard on every node. The timeout names what was not ready."""

        def check() -> bool | None:
            domain = self.domain
            for service in self.services():
                path = service.ready_path
                if path is None:
                    continue
                host = service.host(domain)
                response = self.testnet.http.get(
                    self.url(service.port, path),
                    headers={"host": host} if host else {},
                    timeout=STATUS_REQUEST_TIMEOUT,
                )
                wrong = unready(service, response.status_code, response.content)
                if wrong is not None:
                    raise NotHealthy(f"{service.program.name} {service.name}: {wrong}")
            return True

        wait_until(check, f"await ready of {self.node_id} ({self.role})", timeout)


__all__ = ["Node", "NodeNotReady"]


def parse_dashboard(text: str) -> dict[str, str]:
    """An orchestrator's dashboard (`key: value` lines) as a dict."""
    lines = (line.partition(": ") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in lines if sep}
