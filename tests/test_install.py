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


def _needs_engine(backend: str, what: str) -> None:
    """Skip, saying so, a docker or swarm case without its engine."""
    if backend == "docker" and ENGINE is None:
        pytest.skip(f"NO DOCKER ENGINE: {what} not tested on docker")
    if backend == "swarm" and ENGINE != "swarm":
        pytest.skip(f"NO SWARM: {what} not tested on swarm (scripts/test's swarm step runs it)")


def _user_pytest(
    venv: Path, project: Path, env: dict[str, str], backend: str
) -> subprocess.CompletedProcess[str]:
    """The user's own `pytest` run in their project, on `backend`; it must pass."""
    result = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--backend",
            backend,
            "-v",
            "-rs",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


def _user_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment: none of this session's Python, venv or pytest settings, and a
    state root of the test's own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env["HARNESS_STATE_DIR"] = str(tmp_path / "state")
    return env


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
    _needs_engine(backend, "the installed wheel")
    project = tmp_path / "their-project"
    project.mkdir()
    (project / "test_gateways.py").write_text(USER_SYSTEST)
    python = str(user_venv / "bin" / "python")
    env = _user_env(tmp_path)
    where = _run(
        [python, "-c", "import harness, pytest; print(harness.__file__, pytest.__version__)"],
        cwd=project,
        env=env,
    )
    location, version = where.stdout.split()
    assert Path(location).is_relative_to(user_venv), "the harness must come from the user's venv"
    assert version == USER_PYTEST
    result = _user_pytest(user_venv, project, env, backend)
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


SIDECAR_PACKAGE = '''\
"""Acme's side-car on every subnet node: busybox's httpd, no Python program, which the
orchestrator execs, supervises and restarts as it does the harness's own programs."""

from harness.node.description import Endpoint, Program, Role, RunsOn, Serves, Series

SIDECAR = Program(
    "acme-httpd",
    command=(
        "sh",
        "-c",
        "mkdir -p {data_dir}/acme-www && cd {data_dir}/acme-www && echo acme > index.html"
        " && printf '# TYPE acme_pages_total counter\\nacme_pages_total 7\\n' > metrics"
        " && exec busybox httpd -f -p {listen[acme]} -h {data_dir}/acme-www",
    ),
    endpoints=(
        Endpoint("acme", 8090, Serves.HEALTH, path="/index.html"),
        Endpoint("acme_metrics", 8090, Serves.METRICS),  # a static file: /metrics
    ),
    series=(Series("acme_pages_total", "acme_pages", "Acme's pages, per node", "pages"),),
    thresholds={"acme_pages_total": 7},  # checked after every test
    runs_on=RunsOn(frozenset({Role.REPLICA})),
    packages=("busybox",),  # in a node image (docker, swarm)
    stop_grace=2.0,
)
'''
SIDECAR_PYPROJECT = """\
[project]
name = "acme-sidecar"
version = "1.0"

[project.entry-points."harness.programs"]
acme = "acme_sidecar:SIDECAR"
"""
SIDECAR_SYSTEST = """\
import signal
import time

import psutil
import pytest

from harness.driver import InternetComputer, MetricCheckFailed, Subnet, SubnetType, Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(
    lambda: InternetComputer()
    .add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(1))
    .with_unassigned_nodes(1)
)


def sampled(testnet, since, series):
    samples, _ = testnet.metric_samples(since, time.time())
    return any(sample.series == series for sample in samples)


def new_pid(node, old):
    deadline = time.monotonic() + 30
    while (pid := node.process_pid("acme-httpd")) in (None, old):
        assert time.monotonic() < deadline, "the side-car was not started again"
        time.sleep(0.05)
    return pid


# The side-car is killed and started again on purpose: the after-test metric checks, which
# cover it as every program, would otherwise fail the test for its second start.
@pytest.mark.metric_thresholds(
    update_orchestrator={"orchestrator_processes_start_attempts_total": 2}
)
def test_the_side_car_is_supervised_listed_and_awaited(testnet: Testnet) -> None:
    started = time.time()
    node, spare = testnet.node("subnet-0-node-0"), testnet.node("unassigned-node-0")
    assert "acme-httpd" in node.programs and "acme-httpd" not in spare.programs
    urls = {n["id"]: n["urls"] for n in testnet.describe()["nodes"]}
    assert "acme" not in urls[spare.node_id]
    assert urls[node.node_id]["acme_metrics"] == urls[node.node_id]["acme"]
    assert node.metric("acme_pages_total", port=8090) == 7  # scraped as every program's
    assert node.get(8090, "/index.html").text == "acme\\n"  # through the swarm's proxy too
    local = testnet.describe()["backend"] == "local"
    first = node.await_process("acme-httpd", running=True)
    if local:  # its pid is the host's
        assert psutil.Process(first).cmdline()[:2] == ["busybox", "httpd"]  # exec'd, not forked
    assert node.process_start_attempts("acme-httpd") == 1
    assert node.kill_process("acme-httpd", signal.SIGKILL) == first
    second = new_pid(node, first)
    node.await_ready(30)  # the side-car's health included
    assert node.process_start_attempts("acme-httpd") == 2
    if local:
        assert psutil.Process(second).cmdline()[:2] == ["busybox", "httpd"]
    # A node that joins a subnet runs it too.
    testnet.registry.assign_node(spare.node_id, "subnet-0")
    spare.await_ready(30)
    assert "acme-httpd" in spare.programs and spare.process_pid("acme-httpd") is not None
    # Sampled for the report's plots, as its description's series says (waited for: the
    # sampler goes round every endpoint at its own pace).
    deadline = time.monotonic() + 30
    while not sampled(testnet, started, "acme_pages"):
        assert time.monotonic() < deadline, "the side-car's series was never sampled"
        time.sleep(0.1)


@pytest.mark.xfail(
    strict=True,
    raises=MetricCheckFailed,
    reason="the metric checks cover the side-car's own metrics",
)
@pytest.mark.metric_thresholds(update={"acme-httpd": {"acme_pages_total": 6}})
def test_the_side_car_s_own_metrics_are_checked(testnet: Testnet) -> None:
    testnet.node("subnet-0-node-0").await_ready(30)
"""


@pytest.fixture(scope="module")
def sidecar_path(user_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Acme's side-car distribution, installed (`pip install --target`) into a directory of
    its own that a run puts on PYTHONPATH: the user's venv stays as it is for the other
    tests."""
    project = tmp_path_factory.mktemp("acme-sidecar")
    (project / "acme_sidecar").mkdir()
    (project / "acme_sidecar" / "__init__.py").write_text(SIDECAR_PACKAGE)
    (project / "pyproject.toml").write_text(SIDECAR_PYPROJECT)
    target = tmp_path_factory.mktemp("acme-site")
    _run(
        [
            str(user_venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(target),
            str(project),
        ]
    )
    return target


@pytest.mark.parametrize("backend", ["local", "docker", "swarm"])
def test_a_user_project_adds_a_side_car_through_an_entry_point(
    user_venv: Path, sidecar_path: Path, tmp_path: Path, backend: str
) -> None:
    """The side-car of a distribution installed beside the harness (entry point
    `harness.programs`) is run, listed, awaited, killed and restarted like the harness's own
    programs, on a node of a subnet and on a node that joins one; in containers, from a node
    image that took the distribution in (and busybox, which its description asks for)."""
    _needs_engine(backend, "a user's side-car")
    project = tmp_path / "their-project"
    project.mkdir()
    (project / "test_sidecar.py").write_text(SIDECAR_SYSTEST)
    env = {**_user_env(tmp_path), "PYTHONPATH": str(sidecar_path)}
    result = _user_pytest(user_venv, project, env, backend)
    assert "test_sidecar.py::test_the_side_car_is_supervised_listed_and_awaited PASSED" in (
        result.stdout
    )
    assert "test_sidecar.py::test_the_side_car_s_own_metrics_are_checked XFAIL" in result.stdout
    artifacts = (
        project
        / "artifacts"
        / ("test_sidecar.py_test_the_side_car_is_supervised_listed_and_awaited")
    )
    (testnet_dir,) = [p for p in artifacts.iterdir() if p.is_dir()]
    logs = sorted(path.name for path in testnet_dir.glob("nodes/subnet-0-node-0/*.log"))
    assert "acme-httpd.log" in logs, logs
    metrics = testnet_dir / "nodes" / "subnet-0-node-0" / "metrics-acme-httpd-8090.txt"
    assert "acme_pages_total 7" in metrics.read_text()  # scraped into the artifacts
    # Sampled and plotted in the test's report, as its description says.
    assert "data-series='acme_pages'" in (artifacts / "report.html").read_text()
