"""ic-boundary's Prometheus metrics, all declared here, served on the obs address at `/metrics`.

- ``ic_boundary_requests_total{method, request_type, status, subnet}``: every API request,
  with the status code sent back; ``subnet`` is the subnet the request was routed to (for
  ``/api/v2/status``, the subnet of the replica that answered), ``none`` when there is none
  (``/health``, 404, 405, 413, a status request with no healthy replica).
- ``ic_boundary_request_duration_seconds{method, request_type, subnet}``: histogram of the
  same requests, from the request's start until its answer is ready to send.
- ``ic_boundary_upstream_errors_total{subnet, error}``: failed forwards (``connect``: no
  connection or closed unanswered, retried on the next healthy replica; ``timeout``; ``other``).
- ``ic_boundary_replicas{subnet}`` and ``ic_boundary_healthy_replicas{subnet}``: replicas in
  the routing table and the healthy ones among them, read at scrape time.
- ``ic_boundary_registry_version``: the registry version in use (0 with ``--upstreams``).
- ``ic_boundary_registry_errors_total``: registry versions that could not be read.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from harness.node.boundary.routing import Balancer
from harness.node.http_server import Handler
from harness.node.metrics_app import registry_handler

NO_SUBNET = "none"


class _BalancerCollector(Collector):
    """Gauges computed from the balancer at scrape time, so removed subnets disappear."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        table, healthy = self.balancer.table, self.balancer.healthy
        replicas = GaugeMetricFamily(
            "ic_boundary_replicas", "Replicas in the routing table.", labels=["subnet"]
        )
        healthy_replicas = GaugeMetricFamily(
            "ic_boundary_healthy_replicas",
            "Replicas whose last status probe said healthy.",
            labels=["subnet"],
        )
        for subnet_id, members in table.subnets.items():
            replicas.add_metric([subnet_id], len(members))
            healthy_replicas.add_metric([subnet_id], sum(r in healthy for r in members))
        yield replicas
        yield healthy_replicas
        yield GaugeMetricFamily(
            "ic_boundary_registry_version",
            "Registry version the routing table comes from (0: static --upstreams).",
            value=table.version,
        )


class BoundaryMetrics:
    """The metrics of one ic-boundary process, in their own registry."""

    def __init__(self, balancer: Balancer) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ic_boundary_requests_total",
            "API requests by method, request type, status code sent and serving subnet.",
            ["method", "request_type", "status", "subnet"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ic_boundary_request_duration_seconds",
            "Time to answer an API request.",
            ["method", "request_type", "subnet"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "ic_boundary_upstream_errors_total",
            "Requests a replica failed to answer, by kind of failure.",
            ["subnet", "error"],
            registry=self.registry,
        )
        self.registry_errors = Counter(
            "ic_boundary_registry_errors_total",
            "Registry versions that could not be read (the last good one stays in use).",
            registry=self.registry,
        )
        self.registry.register(_BalancerCollector(balancer))

    def observe(
        self, method: str, request_type: str, status: int, subnet: str, seconds: float
    ) -> None:
        self.requests.labels(method, request_type, str(status), subnet).inc()
        self.duration.labels(method, request_type, subnet).observe(seconds)

    def handler(self) -> Handler:
        """`GET /metrics` in the Prometheus text format; other paths are 404."""
        return registry_handler(self.registry)
