"""What the inner pytest sessions of the plugin's tests share (tests/test_pytest_explain.py,
tests/test_pytest_limits.py): their ini, the backends they run on, a state root of their own,
and the check that they left nothing running."""

from __future__ import annotations

from pathlib import Path

import engines
import pytest

from harness.driver import sweep
from harness.driver.run import tagged_processes

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


def nothing_left() -> None:
    """No process of the inner sessions' runs, and no container, service or network."""
    assert tagged_processes() == {}
    assert sweep(everything=True) == {}
