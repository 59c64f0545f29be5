"""Every Prometheus metric of the replica stub, in one per-program registry, and its scrape app.

prometheus_client appends `_total` to counters, so the exposed names are
`replica_http_health_status_state_transitions_total{before,after}`, `critical_errors_total`,
`consensus_invalidated_artifacts_total`, `dkg_invalidated_artifacts_total`,
`idkg_invalidated_artifacts_total`, `certification_invalidated_artifacts_total`,
`canister_http_invalidated_artifacts_total`, `replica_http_requests_total{route,method,status}`,
plus the gauge `replica_info{version,node_id,subnet_id}` and the histogram
`replica_http_request_duration_seconds{route}`. The IC driver matches names by prefix, so
`critical_errors` still selects `critical_errors_total`.
"""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from harness.node.http_server import Handler
from harness.node.metrics_app import registry_handler
from harness.node.status import ReplicaHealthStatus

# `<name>_created` samples would also match a `<name>` prefix and be compared with a count.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

INVALIDATED_ARTIFACTS = (
    "consensus_invalidated_artifacts",
    "dkg_invalidated_artifacts",
    "idkg_invalidated_artifacts",
    "certification_invalidated_artifacts",
    "canister_http_invalidated_artifacts",
)
METRICS_PATHS = ("/", "/metrics")


class ReplicaMetrics:
    """The replica's metrics; each instance has its own registry."""

    def __init__(self, version: str, node_id: str | None, subnet_id: str | None) -> None:
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.health_transitions = Counter(
            "replica_http_health_status_state_transitions",
            "Transitions of the replica's health status.",
            ["before", "after"],
            registry=self.registry,
        )
        self.critical_errors = Counter(
            "critical_errors",
            "Critical errors; any non-zero value fails a system test.",
            registry=self.registry,
        )
        self.invalidated_artifacts = {
            name: Counter(name, f"Artifacts invalidated ({name}).", registry=self.registry)
            for name in INVALIDATED_ARTIFACTS
        }
        self.info = Gauge(
            "replica_info",
            "Always 1; the labels describe this replica.",
            ["version", "node_id", "subnet_id"],
            registry=self.registry,
        )
        self.info.labels(version, node_id or "", subnet_id or "").set(1)
        self.requests = Counter(
            "replica_http_requests",
            "Requests to the public API.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "replica_http_request_duration_seconds",
            "Time to answer a request to the public API, delays included.",
            ["route"],
            registry=self.registry,
        )
        self._critical_errors_value = 0

    def record_transition(self, before: ReplicaHealthStatus, after: ReplicaHealthStatus) -> None:
        self.health_transitions.labels(before.value, after.value).inc()

    def raise_critical_errors_to(self, value: int) -> None:
        """Raise `critical_errors` to at least `value`; a counter never goes down."""
        if value > self._critical_errors_value:
            self.critical_errors.inc(value - self._critical_errors_value)
            self._critical_errors_value = value

    def record_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # labels() takes a lock and builds a key each time; the label sets are few.
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_duration.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)


def metrics_handler(metrics: ReplicaMetrics, before_scrape: Callable[[], object]) -> Handler:
    """Serve the registry on `/` (the IC driver scrapes the root) and `/metrics`."""
    return registry_handler(metrics.registry, METRICS_PATHS, before_scrape)
