"""Background tasks whose failures are counted, like the IC's `TaskTracker`.

A task that raises is logged and counted in
`orchestrator_tasks_failed_total{task_name, reason="panic"}`; long-lived tasks started with
`spawn_forever` are restarted after a short delay so one bug does not silence them for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from harness.node.orchestrator.metrics import OrchestratorMetrics

log = logging.getLogger(__name__)

PANIC = "panic"  # the IC's reason label for a task that crashed


class TaskTracker:
    """Owns the orchestrator's asyncio tasks (so none is garbage-collected mid-flight)."""

    def __init__(self, metrics: OrchestratorMetrics) -> None:
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def record_failure(self, task_name: str, exc: BaseException) -> None:
        log.error("task %s failed: %r", task_name, exc, exc_info=exc)
        self.metrics.tasks_failed.labels(task_name, PANIC).inc()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` once; count it if it raises."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def spawn_forever(
        self,
        name: str,
        factory: Callable[[], Coroutine[Any, Any, None]],
        restart_delay: float = 1.0,
    ) -> asyncio.Task[None]:
        """Run `factory()` until it returns; after a crash, count it and run it again."""

        async def forever() -> None:
            while True:
                try:
                    await factory()
                    return
                except Exception as exc:
                    self.record_failure(name, exc)
                await asyncio.sleep(restart_delay)

        return self.spawn(name, forever())

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.record_failure(task.get_name(), exc)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
