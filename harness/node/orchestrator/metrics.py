"""Every metric of the orchestrator, in one `CollectorRegistry` served on port 9091.

Names follow the IC's `rs/orchestrator/src/metrics.rs`. Counters with labels are created for
every known process up front, so `orchestrator_processes_start_attempts_total{process="replica"}`
exists at 0 before the first start. `orchestrator_resets_total` is ours, not the IC's: the
harness's `POST /reset` on the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class ResettableCounter(Collector):
    """A counter the IC resets: `orchestrator_failed_consecutive_upgrade_checks_total` goes
    back to 0 after a successful check. prometheus_client counters cannot be reset, so this
    exposes the value as a counter family itself."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def reset(self) -> None:
        self.value = 0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class OrchestratorMetrics:
    """The orchestrator's metrics; `registry` is what the metrics server exposes."""

    def __init__(self, version: str, process_names: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_start_time_seconds, CPU and memory of the orchestrator itself: a restarted
        # orchestrator is told apart by its start time.
        ProcessCollector(registry=r)
        self.info = Gauge(
            "ic_orchestrator_info",
            "The version of the orchestrator (1 for the running version)",
            ["ic_active_version"],
            registry=r,
        )
        self.info.labels(version).set(1)
        self.tasks_failed = Counter(
            "orchestrator_tasks_failed",
            "Background tasks of the orchestrator that failed",
            ["task_name", "reason"],
            registry=r,
        )
        self.failed_consecutive_upgrade_checks = ResettableCounter(
            "orchestrator_failed_consecutive_upgrade_checks_total",
            "Upgrade checks that failed in a row (back to 0 after a successful one)",
        )
        r.register(self.failed_consecutive_upgrade_checks)
        # Exist at 0 for the driver's default checks; nothing here reads CUPs or removes state.
        self.cup_deserialization_failed = Counter(
            "orchestrator_cup_deserialization_failed",
            "Local CUPs that could not be deserialized",
            registry=r,
        )
        self.state_removal_failed = Counter(
            "orchestrator_state_removal_failed",
            "Failures to remove the replica state after leaving a subnet",
            registry=r,
        )
        self.processes_start_attempts = Counter(
            "orchestrator_processes_start_attempts",
            "Attempts to start a node program",
            ["process"],
            registry=r,
        )
        self.processes_stop_attempts = Counter(
            "orchestrator_processes_stop_attempts",
            "Attempts to stop a node program",
            ["process"],
            registry=r,
        )
        self.restart_backoff = Gauge(
            "orchestrator_process_restart_backoff_seconds",
            "Current crash-loop backoff delay of a node program (0: none)",
            ["process"],
            registry=r,
        )
        self.registry_version = Gauge(
            "orchestrator_registry_version",
            "The latest good registry version the orchestrator acts on",
            registry=r,
        )
        self.registry_errors = Counter(
            "orchestrator_registry_errors",
            "Registry versions (or store reads) that were unusable",
            registry=r,
        )
        self.resets = Counter(
            "orchestrator_resets",
            "Harness-only: POST /reset requests carried out (crash-loop backoffs forgotten)",
            registry=r,
        )
        for name in process_names:
            self.processes_start_attempts.labels(name)
            self.processes_stop_attempts.labels(name)
            self.restart_backoff.labels(name).set(0)
