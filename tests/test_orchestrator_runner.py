"""Tests of `SubprocessRunner` and leftover detection with real short-lived processes.

Each scenario runs on uvloop, as the orchestrator does. Process-group behaviour (SIGTERM to the
group, SIGKILL after the grace period, grandchildren) is checked with psutil afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import uvloop

from harness.node.layout import DataDir
from harness.node.orchestrator import pgroup
from harness.node.orchestrator.leftovers import find_leftovers, stop_leftovers
from harness.node.orchestrator.process import LaunchSpec
from harness.node.orchestrator.runner import SubprocessRunner

T = TypeVar("T")
GRACE = 0.3

# Ignores SIGTERM (inherited by its child, which also sleeps), spawns a grandchild, then waits.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("stubborn", "ready", flush=True)
time.sleep(60)
"""
# Spawns a grandchild that ignores SIGTERM, waits until it is ready, prints its pid and exits.
ABANDONING = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
child.stdout.readline()
print("grandchild", child.pid, flush=True)
"""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


def gone(pid: int) -> bool:
    try:
        return not pgroup.is_alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def logged(log: Path, line: str) -> Callable[[], bool]:
    """The program printed `line` (the log's header line holds the code, not the output)."""
    return lambda: line in log.read_text().splitlines()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path)


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Process groups to SIGKILL at the end, whatever happened."""
    groups: list[int] = []
    yield groups
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def python(name: str, code: str, **env: str) -> LaunchSpec:
    return LaunchSpec(name, (sys.executable, "-c", code), env)


def test_start_logs_pid_file_and_exit_status(data, cleanup, caplog) -> None:
    logs, run_dir = data.logs, data.run
    exits: list[str] = []

    async def scenario() -> None:
        runner = SubprocessRunner("replica", data, GRACE, on_exit=lambda: exits.append("x"))
        code = (
            "import os, sys; print('hello', os.environ['SECRET_TOKEN'], sys.argv[1:]); sys.exit(3)"
        )
        spec = LaunchSpec(
            "replica", (sys.executable, "-c", code, "--flag"), {"SECRET_TOKEN": "t0k"}
        )
        pid = await runner.start(spec)
        cleanup.append(pid)
        assert runner.is_running() and runner.pid() == pid
        record = json.loads((run_dir / "replica.pid").read_text())
        assert record["pid"] == pid
        assert record["argv"] == list(spec.argv)
        assert os.getpgid(pid) == pid  # its own process group
        assert await runner.wait_stopped(5)
        assert not runner.is_running() and runner.pid() is None
        assert runner.last_exit is not None
        assert (runner.last_exit.returncode, runner.last_exit.requested) == (3, False)
        assert record["create_time"] == pytest.approx(time.time(), abs=10)

    with caplog.at_level(logging.INFO):
        run(scenario())
    assert exits == ["x"]
    assert not (run_dir / "replica.pid").exists()
    log_lines = (logs / "replica.log").read_text().splitlines()
    assert log_lines[0].startswith("==== ") and "orchestrator: starting replica: " in log_lines[0]
    assert "t0k" not in log_lines[0]  # env is not logged
    assert log_lines[1] == "hello t0k ['--flag']"
    assert "replica exited. Exit Status: exit code 3" in caplog.text


def test_log_file_is_appended_with_a_header_per_start(data, cleanup) -> None:
    logs = data.logs

    async def scenario() -> None:
        runner = SubprocessRunner("ic-gateway", data, GRACE)
        for text in ("first", "second"):
            cleanup.append(await runner.start(python("ic-gateway", f"print({text!r})")))
            assert await runner.wait_stopped(5)

    run(scenario())
    lines = (logs / "ic-gateway.log").read_text().splitlines()
    assert [line for line in lines if not line.startswith("====")] == ["first", "second"]
    assert sum(line.startswith("==== ") for line in lines) == 2


def test_stop_sends_sigterm_to_the_group(data, cleanup) -> None:
    logs = data.logs

    async def scenario() -> None:
        runner = SubprocessRunner("replica", data, 10.0)
        pid = await runner.start(
            python("replica", "import time; print('u' + 'p', flush=True); time.sleep(60)")
        )
        cleanup.append(pid)
        await until(logged(logs / "replica.log", "up"))
        runner.stop()
        assert runner.is_running()  # until the waiter saw the exit
        assert await runner.wait_stopped(5)  # well before the 10 s grace: SIGTERM did it
        assert runner.last_exit is not None
        assert (runner.last_exit.returncode, runner.last_exit.requested) == (-signal.SIGTERM, True)
        assert runner.last_exit.describe() == "killed by signal 15 (SIGTERM)"

    run(scenario())


def test_sigkill_after_the_grace_period_and_no_orphans(data, cleanup, caplog) -> None:
    logs, run_dir = data.logs, data.run

    async def scenario() -> tuple[int, int]:
        runner = SubprocessRunner("replica", data, GRACE)
        pid = await runner.start(python("replica", STUBBORN))
        cleanup.append(pid)
        await until(logged(logs / "replica.log", "stubborn ready"))
        (grandchild,) = psutil.Process(pid).children()
        started = time.monotonic()
        runner.stop()
        assert await runner.wait_stopped(5)
        elapsed = time.monotonic() - started
        assert elapsed >= GRACE  # and within wait_stopped's 5 s: SIGKILL right after the grace
        assert runner.last_exit is not None
        assert runner.last_exit.returncode == -signal.SIGKILL
        return pid, grandchild.pid

    with caplog.at_level(logging.INFO):
        pid, grandchild = run(scenario())
    assert gone(pid) and gone(grandchild)
    assert pgroup.group_members(pid) == []
    assert (
        "did not exit within 0.3 s of SIGTERM: sending SIGKILL to its process group" in caplog.text
    )
    assert not (run_dir / "replica.pid").exists()


def test_grandchildren_of_a_crashed_program_are_stopped_before_it_counts_as_gone(
    data, cleanup, caplog
) -> None:
    logs = data.logs

    async def scenario() -> None:
        runner = SubprocessRunner("replica", data, GRACE)
        pid = await runner.start(python("replica", ABANDONING))
        cleanup.append(pid)
        started = time.monotonic()
        assert await runner.wait_stopped(5)
        # The leader exited at once; the grandchild ignored SIGTERM until the SIGKILL.
        assert time.monotonic() - started >= GRACE
        assert runner.last_exit is not None and runner.last_exit.returncode == 0
        assert pgroup.group_members(pid) == []

    with caplog.at_level(logging.INFO):
        run(scenario())
    (line,) = [
        x for x in (logs / "replica.log").read_text().splitlines() if x.startswith("grandchild ")
    ]
    assert gone(int(line.split()[1]))
    assert "replica exited but left 1 process(es) in its process group" in caplog.text


def test_start_of_a_missing_binary_raises_and_is_logged(data) -> None:
    logs, run_dir = data.logs, data.run

    async def scenario() -> None:
        runner = SubprocessRunner("replica", data, GRACE)
        with pytest.raises(FileNotFoundError):
            await runner.start(LaunchSpec("replica", (str(logs / "no-such-binary"),)))
        assert not runner.is_running()

    run(scenario())
    assert "cannot start replica" in (logs / "replica.log").read_text()
    assert not (run_dir / "replica.pid").exists()


# ---------------------------------------------------------------------------------- leftovers
def spawn_detached(code: str) -> subprocess.Popen[bytes]:
    """A program as a previous orchestrator would have left it: its own session."""
    return subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE
    )


def write_pid_file(run_dir: Path, name: str, pid: int, create_time: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "pid": pid, "create_time": create_time, "argv": ["x"]}
    (run_dir / f"{name}.pid").write_text(json.dumps(record))


def test_leftovers_are_stopped_with_their_group(tmp_path, cleanup, caplog) -> None:
    run_dir = tmp_path / "run"
    process = spawn_detached(STUBBORN)
    cleanup.append(process.pid)
    assert process.stdout is not None
    assert process.stdout.readline() == b"stubborn ready\n"
    (grandchild,) = psutil.Process(process.pid).children()
    write_pid_file(run_dir, "replica", process.pid, psutil.Process(process.pid).create_time())

    leftovers, stale = find_leftovers(run_dir)
    assert [leftover.record.name for leftover in leftovers] == ["replica"]
    assert stale == []
    assert set(leftovers[0].members) == {process.pid, grandchild.pid}

    with caplog.at_level(logging.INFO):
        found = run(stop_leftovers(run_dir, GRACE))
    assert [leftover.record.pid for leftover in found] == [process.pid]
    assert process.wait(5) == -signal.SIGKILL  # it ignored SIGTERM
    assert gone(grandchild.pid)
    assert not (run_dir / "replica.pid").exists()
    assert f"found replica left by a previous orchestrator: pid {process.pid}" in caplog.text


def test_leftover_with_another_create_time_is_never_touched(tmp_path, cleanup, caplog) -> None:
    run_dir = tmp_path / "run"
    process = spawn_detached("import time; time.sleep(60)")
    cleanup.append(process.pid)
    real = psutil.Process(process.pid).create_time()
    write_pid_file(run_dir, "replica", process.pid, real - 5.0)  # the pid was reused since

    assert find_leftovers(run_dir)[0] == []
    with caplog.at_level(logging.INFO):
        assert run(stop_leftovers(run_dir, GRACE)) == []
    assert process.poll() is None  # still running
    assert not (run_dir / "replica.pid").exists()  # the stale file is gone
    assert f"pid {process.pid} now belongs to another process" in caplog.text


def test_leftover_group_members_are_stopped_when_the_leader_is_gone(tmp_path, cleanup) -> None:
    run_dir = tmp_path / "run"
    process = spawn_detached(ABANDONING)
    cleanup.append(process.pid)
    create_time = psutil.Process(process.pid).create_time()
    assert process.stdout is not None
    grandchild = int(process.stdout.readline().split()[1])
    assert process.wait(5) == 0
    assert [m.pid for m in pgroup.group_members(process.pid)] == [grandchild]
    write_pid_file(run_dir, "ic-gateway", process.pid, create_time)

    found = run(stop_leftovers(run_dir, GRACE))
    assert [(f.record.name, f.leader_alive) for f in found] == [("ic-gateway", False)]
    assert gone(grandchild)


def test_unreadable_and_dead_pid_files_are_removed(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "replica.pid").write_text("not json")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = psutil.Process(process.pid).create_time()
    process.wait()
    write_pid_file(run_dir, "ic-boundary", process.pid, create_time)
    assert run(stop_leftovers(run_dir, GRACE)) == []
    assert sorted(run_dir.iterdir()) == []
