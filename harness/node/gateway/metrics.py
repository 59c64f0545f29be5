"""ic-gateway's Prometheus metrics, all declared here, served on `METRICS_LISTEN` at `/metrics`.

Names and labels follow the real gateway (registry prefix `ic_gateway`):

- ``ic_gateway_http_total{method, http, status, error, upstream}``: every request answered on
  the plain listener; ``http`` is the protocol (``HTTP/1.1``), ``status`` the code sent,
  ``error`` the `errors` label (``none`` when the answer is the replica's or a good health
  check), ``upstream`` the replica's host:port that answered or failed (empty if none was asked).
- ``ic_gateway_http_duration_sec{method, http, status, error, upstream}``: histogram of the
  same requests, from the call of the app to the last byte handed to the server.
- ``ic_gateway_upstream_requests_total{upstream, outcome}``: every attempt sent to a replica,
  retries included; ``outcome`` is the status code or the error label
  (``backend_error_connect``, ``backend_timeout``, ``backend_error_other``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from harness.node.http_server import Handler
from harness.node.metrics_app import registry_handler

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LABELS = ("method", "http", "status", "error", "upstream")


class GatewayMetrics:
    """The metrics of one ic-gateway process, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_total = Counter(
            "ic_gateway_http_total",
            "Requests answered, by method, protocol, status, error cause and upstream.",
            _LABELS,
            registry=self.registry,
        )
        # promtool lints `_sec` ("abbreviated units"); the name stays: it is the real
        # gateway's. Allowed in ALLOWED_LINTS of tests/test_promtool.py.
        self.http_duration = Histogram(
            "ic_gateway_http_duration_sec",
            "Time to answer a request, in seconds.",
            _LABELS,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_requests = Counter(
            "ic_gateway_upstream_requests_total",
            "Attempts sent to a replica, retries included, by outcome.",
            ("upstream", "outcome"),
            registry=self.registry,
        )
        # labels() takes a lock and builds a key each time; the label sets are few.
        self._http: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}
        self._attempts: dict[tuple[str, str], Counter] = {}

    def observe(
        self, method: str, http: str, status: int, error: str, upstream: str, seconds: float
    ) -> None:
        key = (method, http, str(status), error, upstream)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self.http_total.labels(*key),
                self.http_duration.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)

    def attempted(self, upstream: str, outcome: str) -> None:
        key = (upstream, outcome)
        child = self._attempts.get(key)
        if child is None:
            child = self._attempts[key] = self.upstream_requests.labels(*key)
        child.inc()

    def handler(self) -> Handler:
        """`GET /metrics` in the Prometheus text format; other paths are 404."""
        return registry_handler(self.registry)
