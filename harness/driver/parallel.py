"""Doing one thing for every node at once (health waits, resets, scrapes, log marks), on a few
threads a testnet keeps for its life.

The threads are daemons, unlike `concurrent.futures`' (which the interpreter joins at exit): a
caller interrupted while it waits (Ctrl-C, SIGTERM, a time limit) goes on at once, and what
was still running for it ends on its own (each task is bounded by its own timeout) without
holding up the teardown or the process's exit.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Call:
    """One `Workers.map`: its results, and how many tasks are left."""

    def __init__(self, count: int) -> None:
        self.results: list[Any] = [None] * count
        self.errors: list[BaseException | None] = [None] * count
        self.left = count
        self.finished = threading.Condition()

    def done(self, index: int, result: Any, error: BaseException | None) -> None:
        with self.finished:
            self.results[index], self.errors[index] = result, error
            self.left -= 1
            self.finished.notify_all()


class Workers:
    """Up to `size` daemon threads, started as they are needed."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._tasks: queue.SimpleQueue[tuple[_Call, int, Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def map(
        self,
        function: Callable[[T], R],
        items: Iterable[T],
        on_done: Callable[[int], None] | None = None,
    ) -> list[R]:
        """`function` of every item, all at once; the results in the items' order. When tasks
        fail, the first failure (in the items' order) is raised once every task has ended.
        `on_done(n)` is called in the caller's thread as tasks end (n: how many so far)."""
        listed = list(items)
        call = _Call(len(listed))
        for index, item in enumerate(listed):
            self._submit(call, index, functools.partial(function, item))
        reported = 0
        with call.finished:
            while True:
                ended = len(listed) - call.left
                while reported < ended:
                    reported += 1
                    if on_done is not None:
                        on_done(reported)
                if call.left == 0:
                    break
                call.finished.wait()
        for error in call.errors:
            if error is not None:
                raise error
        return list(call.results)

    def _submit(self, call: _Call, index: int, task: Callable[[], Any]) -> None:
        with self._lock:  # a thread per task until there are `size`; then they take turns
            if len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._tasks.put((call, index, task))

    def _work(self) -> None:
        while True:
            item = self._tasks.get()
            if item is None:
                return
            call, index, task = item
            try:
                result, error = task(), None
            except BaseException as exc:  # handed to the caller, whatever it is
                result, error = None, exc
            call.done(index, result, error)

    def stop(self) -> None:
        """Let the threads end once the tasks queued now are done (nothing waits for them)."""
        with self._lock:
            for _ in self._threads:
                self._tasks.put(None)
            self._threads = []
