"""Importing the harness changes nothing outside it, and its containers skip Ryuk without
taking Ryuk away from the user's own testcontainers.

A project that installs the harness beside its own testcontainers tests must keep whatever it
configured: importing any harness module may not touch the environment or another library's
settings, and starting a docker testnet may not start (or turn off) testcontainers' Ryuk.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer, Reaper

from harness.driver import InternetComputer, Run, Subnet, SubnetType, Testnet, sweep
from harness.driver.backends.engine import engine
from harness.driver.backends.images import build_node_image
from harness.driver.errors import BackendUnavailable

# Run in a fresh interpreter: what the process looks like before and after importing every
# module of the harness.
SNAPSHOT = r"""
import asyncio, json, logging, os, pkgutil, signal, socket, sys, warnings, importlib

def snapshot():
    from testcontainers.core.config import testcontainers_config as tc
    return {
        "environ": dict(os.environ),
        "ryuk_disabled": tc.ryuk_disabled,
        "testcontainers": {k: str(v) for k, v in vars(tc).items()},
        "event_loop_policy": type(asyncio.get_event_loop_policy()).__name__,
        "signals": {
            s.name: repr(signal.getsignal(s))
            for s in signal.valid_signals() if isinstance(s, signal.Signals)
        },
        "root_logger": [logging.getLogger().level, repr(logging.getLogger().handlers)],
        "warnings": repr(warnings.filters),
        "socket_timeout": socket.getdefaulttimeout(),
        "recursion_limit": sys.getrecursionlimit(),
        "cwd": os.getcwd(),
        "umask": os.umask(os.umask(0)),
    }

before = snapshot()
import harness
imported = []
for module in pkgutil.walk_packages(harness.__path__, "harness."):
    importlib.import_module(module.name)
    imported.append(module.name)
after = snapshot()
print(json.dumps({"imported": imported, "before": before, "after": after}))
"""


def test_importing_every_harness_module_changes_nothing_outside() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESTCONTAINERS")}
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "harness.driver.backends.docker" in found["imported"]
    assert "harness.pytest_plugin" in found["imported"]
    assert len(found["imported"]) > 60
    before, after = found["before"], found["after"]
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert changed == {}
    assert after["ryuk_disabled"] is False  # the user's default stays: Ryuk on


def _engine_missing() -> str | None:
    try:
        engine().close()
    except BackendUnavailable as exc:
        return str(exc)
    return None


_MISSING = _engine_missing()


@pytest.fixture
def ryuk_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Ryuk on, as a user who never turned it off has it; starting it is recorded and refused
    (its image cannot be pulled here), so a test sees who asked for it."""
    calls: list[str] = []

    def get_instance(cls: type[Reaper]) -> Reaper:
        calls.append("Reaper.get_instance")
        raise RuntimeError("Ryuk was asked for")

    monkeypatch.delenv("TESTCONTAINERS_RYUK_DISABLED", raising=False)
    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", False)
    monkeypatch.setattr(Reaper, "get_instance", classmethod(get_instance))
    yield calls


@pytest.fixture
def own_state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "state"
    monkeypatch.setenv("HARNESS_STATE_DIR", str(root))
    yield root
    sweep(everything=True)


@pytest.mark.skipif(_MISSING is not None, reason=f"NO DOCKER ENGINE: {_MISSING}")
def test_the_driver_s_names_are_imported_when_asked_for() -> None:
    """`harness.driver` exports every name of its `__all__`, each from the module its type
    checkers are told of; importing one module of the driver (a report's renderer does) does
    not import the rest of it, nor its HTTP client."""
    import harness.driver

    tree = ast.parse(Path(harness.driver.__file__).read_text())
    told = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert told == harness.driver._EXPORTS
    assert sorted(told) == sorted(harness.driver.__all__)
    for name in harness.driver.__all__:
        assert getattr(harness.driver, name) is getattr(importlib.import_module(told[name]), name)
    assert set(harness.driver.__all__) <= set(dir(harness.driver))
    with pytest.raises(AttributeError, match="no attribute 'Testnett'"):
        harness.driver.Testnett  # noqa: B018
    probe = (
        "import json, sys\n"
        "import harness.driver.report\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('harness.', 'httpx')))))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True))
    assert "harness.driver.report" in loaded
    assert not {"httpx", "harness.driver.testnet", "harness.driver.aio"} & set(loaded)


def test_harness_containers_skip_ryuk_and_the_users_keep_it(
    ryuk_calls: list[str], own_state_root: Path
) -> None:
    topology = InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
    run = Run.create("pytest")
    try:
        with Testnet(topology, run, "docker").start() as testnet:
            node = testnet.topology_snapshot().root_subnet().nodes[0]
            assert node.status().is_healthy
        assert ryuk_calls == [], "the harness's containers asked for Ryuk"
        assert testcontainers_config.ryuk_disabled is False
        # The user's own container, in the same process, still gets Ryuk as configured.
        with pytest.raises(RuntimeError, match="Ryuk was asked for"):
            DockerContainer(build_node_image()).start()
        assert ryuk_calls == ["Reaper.get_instance"]
    finally:
        run.close()
