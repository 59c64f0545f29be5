"""Metric threshold checks: prefix semantics, prefix-free maps, IC-style messages."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from harness.driver import HarnessError, MetricsScrapeError, MetricThresholds, PrefixClash
from harness.driver.metrics_check import check_prefix_free, offenders, parse_metrics


def exposition() -> str:
    registry = CollectorRegistry()
    starts = Counter(
        "orchestrator_processes_start_attempts", "starts", ["process"], registry=registry
    )
    starts.labels("replica").inc(2)
    starts.labels("ic-gateway").inc(1)
    Counter("orchestrator_tasks_failed", "failed", registry=registry)
    return generate_latest(registry).decode()


def test_prefix_matches_every_labelled_series_and_ignores_created_timestamps() -> None:
    samples = parse_metrics(exposition())
    assert {s.name for s in samples} == {
        "orchestrator_processes_start_attempts_total",
        "orchestrator_tasks_failed_total",
    }
    lines = offenders("node-1", samples, MetricThresholds.defaults().orchestrator)
    assert lines == [
        'The metric `orchestrator_processes_start_attempts_total{process="replica"}` on node '
        "node-1 exceeded the maximum allowed value: 2 > 1"
    ]


def test_raised_threshold_passes() -> None:
    thresholds = MetricThresholds.defaults().update_orchestrator_metric(
        "orchestrator_processes_start_attempts_total", 2
    )
    assert offenders("n", parse_metrics(exposition()), thresholds.orchestrator) == []


def test_prefix_free_is_enforced_with_the_clashing_pair() -> None:
    with pytest.raises(PrefixClash) as error:
        MetricThresholds.defaults().update_orchestrator_metric(
            "orchestrator_processes_start_attempts_total_replica", 3
        )
    assert (
        "`orchestrator_processes_start_attempts_total` is a prefix of "
        "`orchestrator_processes_start_attempts_total_replica`" in str(error.value)
    )
    check_prefix_free(["a_b", "a_c"])


def test_remove_and_remove_all() -> None:
    thresholds = MetricThresholds.defaults().remove("critical_errors")
    assert "critical_errors" not in thresholds.replica
    with pytest.raises(HarnessError, match="is not checked"):
        thresholds.remove("critical_errors")
    assert thresholds.remove_all().programs == {
        "orchestrator": {},
        "replica": {},
        "ic-gateway": {},
        "ic-boundary": {},
    }


def test_every_program_that_serves_metrics_has_thresholds_from_its_description() -> None:
    thresholds = MetricThresholds.defaults()
    assert thresholds.replica["critical_errors"] == 0  # the IC's defaults, in the replica's
    assert thresholds.orchestrator["orchestrator_processes_start_attempts_total"] == 1
    assert thresholds.programs["ic-gateway"] == {}
    thresholds.update("ic-gateway", "ic_gateway_http_total", 100)
    assert thresholds.programs["ic-gateway"] == {"ic_gateway_http_total": 100}
    with pytest.raises(HarnessError, match="no node program 'nginx' serves metrics to check"):
        thresholds.update("nginx", "x", 1)


def test_bad_exposition_is_a_scrape_error() -> None:
    with pytest.raises(MetricsScrapeError, match="not valid Prometheus text"):
        parse_metrics("metric{unclosed 1\n")
