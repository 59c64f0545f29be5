"""What the inner pytest sessions of the plugin's tests share (tests/test_pytest_explain.py,
tests/test_pytest_limits.py): their ini, the backends they run on, a state root of their own,
and the check that they left nothing running."""

from __future__ import annotations

from pathlib import Path

import engines
import psutil
import pytest

from harness.driver import sweep
from harness.driver.errors import NodeNotReady
from harness.driver.run import tagged_processes
from harness.driver.waits import wait_until

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
BACKENDS = [
    "local",
    pytest.param("docker", marks=engines.needs_docker("the inner sessions on docker")),
]


@pytest.fixture(autouse=True)
def own_state(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The inner sessions' runs in a state root of their own, so that what they leave (and
    nothing else) is what `sweep` and `tagged_processes` see here."""
    pytester.makeini(INI)
    state = pytester.path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(state))
    return state


def nothing_left(timeout: float = 15.0) -> None:
    """No process of the inner sessions' runs (waited for a little: what a removal signalled
    may take a moment to exit), and no container, service or network."""

    def gone() -> bool | None:
        return True if not tagged_processes() else None

    try:
        wait_until(gone, "the inner sessions' processes to end", timeout)
    except NodeNotReady:
        left = {
            run: [f"{p.pid} {' '.join(_cmdline(p))[:200]}" for p in processes]
            for run, processes in tagged_processes().items()
        }
        raise AssertionError(f"processes of the inner sessions' runs left: {left}") from None
    assert sweep(everything=True) == {}


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error as exc:
        return [f"({type(exc).__name__})"]
