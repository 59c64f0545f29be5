"""Unit tests of the task tracker: crashed tasks are counted (and long-lived ones restarted)."""

from __future__ import annotations

import asyncio

from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.tasks import TaskTracker


def failures(metrics: OrchestratorMetrics, task: str) -> float | None:
    return metrics.registry.get_sample_value(
        "orchestrator_tasks_failed_total", {"task_name": task, "reason": "panic"}
    )


def test_a_crashed_task_is_counted_with_its_name(caplog) -> None:
    metrics = OrchestratorMetrics("1", ["replica"])

    async def crash() -> None:
        raise ValueError("bad")

    async def scenario() -> None:
        tracker = TaskTracker(metrics)
        task = tracker.spawn("dashboard", crash())
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # let the done callback run

    asyncio.run(scenario())
    assert failures(metrics, "dashboard") == 1
    assert "task dashboard failed: ValueError('bad')" in caplog.text


def test_spawn_forever_restarts_after_a_crash_and_cancel_all_stops_it() -> None:
    metrics = OrchestratorMetrics("1", ["replica"])
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("flake")
        await asyncio.sleep(60)

    async def scenario() -> None:
        tracker = TaskTracker(metrics)
        tracker.spawn_forever("registry_replicator", flaky, restart_delay=0.01)
        while len(runs) < 3:
            await asyncio.sleep(0.01)
        await tracker.cancel_all()

    asyncio.run(scenario())
    assert len(runs) == 3
    assert failures(metrics, "registry_replicator") == 2


def test_a_cancelled_task_is_not_a_failure() -> None:
    metrics = OrchestratorMetrics("1", ["replica"])

    async def scenario() -> None:
        tracker = TaskTracker(metrics)
        tracker.spawn("metrics", asyncio.sleep(60))
        await asyncio.sleep(0)
        await tracker.cancel_all()

    asyncio.run(scenario())
    assert failures(metrics, "metrics") is None
