"""Metric threshold checks, as the IC's system-test driver runs them at the end of every test.

A configured name matches every series whose name starts with it (prefix semantics), so
`orchestrator_processes_start_attempts_total` covers every `{process=...}` series. The names of
one map must therefore be prefix-free; a map that is not is rejected with the clashing pair.
Unlike the IC, a scrape that fails fails the check: a node whose metrics cannot be read is an
offender, not a silent skip.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from harness.driver.errors import HarnessError, MetricsScrapeError
from harness.node.catalog import ORCHESTRATOR, PROGRAMS, REPLICA

DEFAULT_REPLICA_METRICS: Mapping[str, float] = REPLICA.thresholds
DEFAULT_ORCHESTRATOR_METRICS: Mapping[str, float] = ORCHESTRATOR.thresholds
# Sample suffixes prometheus_client adds to counters/histograms that hold timestamps, not counts.
_TIMESTAMP_SUFFIX = "_created"


class PrefixClash(HarnessError, ValueError):
    """Two configured metric names of which one is a prefix of the other."""


def check_prefix_free(names: Iterable[str]) -> None:
    """Raise `PrefixClash` naming the first pair where one name is a prefix of the other."""
    ordered = sorted(set(names))
    for shorter, longer in itertools.pairwise(ordered):
        if longer.startswith(shorter):
            raise PrefixClash(
                f"metric names to check must be prefix-free: `{shorter}` is a prefix of "
                f"`{longer}`, so it would check `{longer}` series twice; update the entry of "
                f"`{shorter}` instead of adding a more specific one"
            )


@dataclass
class MetricThresholds:
    """Maximum allowed values per metric-name prefix, per node program (its description's
    `thresholds` by default: the IC's for the replica, 9090, and the orchestrator, 9091). Start
    from `defaults()` and update/remove per test."""

    programs: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def defaults(cls) -> MetricThresholds:
        return cls({p.name: dict(p.thresholds) for p in PROGRAMS if p.metrics is not None})

    @property
    def replica(self) -> dict[str, float]:
        return self.programs.setdefault(REPLICA.name, {})

    @property
    def orchestrator(self) -> dict[str, float]:
        return self.programs.setdefault(ORCHESTRATOR.name, {})

    def update(self, program: str, name: str, maximum: float) -> MetricThresholds:
        """Check `name` (a prefix) of `program`'s metrics against `maximum`."""
        if program not in self.programs:
            raise HarnessError(
                f"no node program {program!r} serves metrics to check; programs: "
                f"{sorted(self.programs)}"
            )
        self.programs[program][name] = maximum
        check_prefix_free(self.programs[program])
        return self

    def update_replica_metric(self, name: str, maximum: float) -> MetricThresholds:
        return self.update(REPLICA.name, name, maximum)

    def update_orchestrator_metric(self, name: str, maximum: float) -> MetricThresholds:
        return self.update(ORCHESTRATOR.name, name, maximum)

    def remove(self, name: str) -> MetricThresholds:
        """Stop checking `name` (of every program), like the IC's `remove_metrics_to_check`."""
        holding = [limits for limits in self.programs.values() if name in limits]
        if not holding:
            checked = sorted({n for limits in self.programs.values() for n in limits})
            raise HarnessError(f"metric {name!r} is not checked; checked: {checked}")
        for limits in holding:
            del limits[name]
        return self

    def remove_all(self) -> MetricThresholds:
        for limits in self.programs.values():
            limits.clear()
        return self

    def validate(self) -> None:
        for limits in self.programs.values():
            check_prefix_free(limits)


@dataclass(frozen=True)
class Sample:
    """One series of a scrape: its full key (`name{labels}`) and value."""

    name: str
    labels: Mapping[str, str]
    value: float
    counter: bool = False
    """A counter's series (it only grows while its process runs)."""

    @property
    def key(self) -> str:
        if not self.labels:
            return self.name
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}"


def parse_metrics(text: str, source: str = "metrics") -> list[Sample]:
    """Parse Prometheus text exposition with prometheus_client's parser (timestamps dropped)."""
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsScrapeError(f"{source}: not valid Prometheus text exposition: {exc}") from exc
    samples: list[Sample] = []
    for family in families:
        for sample in family.samples:
            # The text parser files `<counter>_created` lines under a family of their own, so
            # they are recognised by name: they hold creation timestamps, never counts.
            if sample.name.endswith(_TIMESTAMP_SUFFIX):
                continue
            samples.append(
                Sample(
                    sample.name,
                    dict(sample.labels),
                    float(sample.value),
                    family.type == "counter",
                )
            )
    return samples


@dataclass(frozen=True)
class Reference:
    """One metrics endpoint's counters when a reused testnet was reset (`Testnet.reset`), and
    as they were when the testnet was fresh (just started), by series key."""

    at_reset: Mapping[str, float]
    fresh: Mapping[str, float]
    start_time: float | None
    """The process's `process_start_time_seconds` at the reset."""

    @classmethod
    def of(cls, at_reset: Sequence[Sample], fresh: Mapping[str, float]) -> Reference:
        counters = {sample.key: sample.value for sample in at_reset if sample.counter}
        return cls(counters, fresh, _start_time(at_reset))


Baseline = Mapping[tuple[str, int], Reference]
"""The `Reference` of every node's metrics endpoints at a reset, by (node id, port)."""

START_TIME = "process_start_time_seconds"


def counters(samples: Iterable[Sample]) -> dict[str, float]:
    """The counters' values of a scrape, by series key."""
    return {sample.key: sample.value for sample in samples if sample.counter}


def since_reset(samples: Sequence[Sample], reference: Reference) -> list[Sample]:
    """`samples` with every counter's value what it would be on a fresh testnet: its value when
    fresh plus its increase since the reset, so that a reused testnet reads, and passes the
    thresholds, exactly as a fresh one. Where the process started again since (its
    `process_start_time_seconds` changed, or a counter went down), its counters count from
    its start, as they would on a fresh testnet, and are left as they are."""
    restarted = _start_time(samples) != reference.start_time
    result = []
    for sample in samples:
        was = reference.at_reset.get(sample.key)
        if sample.counter and was is not None and not restarted and sample.value >= was:
            value = sample.value - was + reference.fresh.get(sample.key, 0.0)
            sample = dataclasses.replace(sample, value=value)
        result.append(sample)
    return result


def _start_time(samples: Iterable[Sample]) -> float | None:
    return next((sample.value for sample in samples if sample.name == START_TIME), None)


def offenders(
    node_id: str, samples: Iterable[Sample], thresholds: Mapping[str, float]
) -> list[str]:
    """The IC-style failure line for every series above its threshold."""
    lines = []
    for sample in samples:
        for prefix, maximum in thresholds.items():
            if sample.name.startswith(prefix) and sample.value > maximum:
                lines.append(
                    f"The metric `{sample.key}` on node {node_id} exceeded the maximum allowed "
                    f"value: {_number(sample.value)} > {_number(maximum)}"
                )
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
