"""`harness.driver.parallel.Workers`: every item at once, results in order, the first failure
raised once all ended, progress in the caller's thread, and a caller interrupted while it waits
goes on at once without the process's exit waiting for what still runs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from harness.driver.parallel import Workers


def test_every_item_at_once_with_the_results_in_order() -> None:
    workers = Workers(4, "test")
    started = threading.Barrier(4, timeout=10)  # 4 items wait for each other: all at once

    def meet(item: int) -> int:
        started.wait()
        return item * 2

    assert workers.map(meet, range(4)) == [0, 2, 4, 6]
    assert workers.map(lambda item: item + 1, range(20)) == list(range(1, 21))  # in turns
    workers.stop()


def test_the_first_failure_is_raised_once_every_task_has_ended() -> None:
    workers = Workers(4, "test")
    ended: list[int] = []

    def task(item: int) -> int:
        if item in (1, 2):
            raise ValueError(f"item {item}")
        time.sleep(0.05)
        ended.append(item)
        return item

    with pytest.raises(ValueError, match="item 1"):
        workers.map(task, range(4))
    assert sorted(ended) == [0, 3]
    workers.stop()


def test_progress_is_reported_in_the_callers_thread() -> None:
    workers = Workers(3, "test")
    reports: list[tuple[int, str]] = []
    workers.map(
        lambda item: item,
        range(5),
        lambda done: reports.append((done, threading.current_thread().name)),
    )
    assert [done for done, _ in reports] == [1, 2, 3, 4, 5]
    assert {name for _, name in reports} == {threading.current_thread().name}
    workers.stop()


INTERRUPTED = """
import signal, time
from harness.driver.parallel import Workers

def interrupt(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.2)
started = time.monotonic()
try:
    Workers(2, "test").map(lambda item: time.sleep(30), range(2))
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f} s")
"""


def test_an_interrupted_caller_goes_on_and_the_process_exits_at_once() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("interrupted after 0.")
    assert time.monotonic() - started < 25  # not the tasks' 30 s
