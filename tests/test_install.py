"""What a user does who keeps system tests in a project of their own: build the harness's wheel,
install it into a fresh venv outside the checkout beside an older pytest of their own, and run a
one-file systest there, on the local backend, and on docker and swarm where an engine runs (the
node image then comes from the installed package, not from a checkout).

Needs PyPI (the venv installs the wheel's dependencies from there), as the project's own
install does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_PYTEST = "8.3.5"  # older than the harness's own lock: the user's pin, not ours

USER_SYSTEST = """\
from harness.driver import InternetComputer, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer().add_subnet(
        Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway()
    )
)


def test_gateways_answer(testnet: Testnet) -> None:
    for node in testnet.nodes():
        assert node.await_status_is_healthy(port=80).is_healthy
"""


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, (
        f"{argv} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _engine() -> str | None:
    """None without a docker engine, else whether it manages a swarm ("swarm") or not."""
    try:
        client = docker.from_env()
        info = client.info()
        client.close()
    except Exception:
        return None
    swarm = info.get("Swarm") or {}
    return (
        "swarm"
        if swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable")
        else "docker"
    )


ENGINE = _engine()


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv outside the checkout with the wheel and the user's own pytest pin."""
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            str(ROOT),
        ]
    )
    (wheel,) = dist.glob("harness-*.whl")
    venv = tmp_path_factory.mktemp("user") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
            f"pytest=={USER_PYTEST}",
        ]
    )
    yield venv


@pytest.mark.parametrize("backend", ["local", "docker", "swarm"])
def test_a_user_project_runs_a_systest_with_the_installed_harness(
    user_venv: Path, tmp_path: Path, backend: str
) -> None:
    if backend == "docker" and ENGINE is None:
        pytest.skip("NO DOCKER ENGINE: the installed wheel not tested on docker")
    if backend == "swarm" and ENGINE != "swarm":
        pytest.skip(
            "NO SWARM: the installed wheel not tested on swarm (scripts/test's swarm step runs it)"
        )
    project = tmp_path / "their-project"
    project.mkdir()
    (project / "test_gateways.py").write_text(USER_SYSTEST)
    python = str(user_venv / "bin" / "python")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env["HARNESS_STATE_DIR"] = str(tmp_path / "state")
    where = _run(
        [python, "-c", "import harness, pytest; print(harness.__file__, pytest.__version__)"],
        cwd=project,
        env=env,
    )
    location, version = where.stdout.split()
    assert Path(location).is_relative_to(user_venv), "the harness must come from the user's venv"
    assert version == USER_PYTEST
    result = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "--backend", backend, "-v", "-rs"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"pytest-{USER_PYTEST}" in result.stdout
    assert "test_gateways.py::test_gateways_answer PASSED" in result.stdout
    (artifacts,) = [p for p in (project / "artifacts").iterdir() if p.is_dir()]
    (testnet_dir,) = [p for p in artifacts.iterdir() if p.is_dir()]
    assert "outcome: passed" in (testnet_dir / "summary.txt").read_text()
    # The report (plots drawn by the user's venv's matplotlib) and the session's index.
    assert "<svg" in (artifacts / "report.html").read_text()
    assert "report.html" in (project / "artifacts" / "index.html").read_text()
    version_line = _run([str(user_venv / "bin" / "harness"), "--version"], cwd=project, env=env)
    assert version_line.stdout.startswith("harness ")
