"""Fixtures shared by the harness's own tests: free loopback addresses and node programs.

`loopback_ip` gives each test its own 127.x.y.z address (random, checked free), so tests can
bind the real ports (80, 8080, 9090, ...) and run in parallel under xdist.
`start_program` starts a node program as a real process in its own process group, waits until
a URL answers, and always kills the group at the end of the test, printing its log on failure.
The slowest test files are collected first (`pytest_collection_modifyitems`);
`node_image_tags` keeps tests that tag the node image and tests that check its tags apart
under pytest-xdist.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpcore  # noqa: F401  (see below)
import httpx
import pytest

# httpx imports httpcore only when its first client is made, and keeps httpcore's exception
# classes to map them onto its own. pytester's in-process runs (tests/test_pytest_plugin.py)
# take every module they imported out of sys.modules afterwards: had httpcore been first
# imported inside one, the clients made later would raise a new httpcore's errors that httpx no
# longer maps (a raw httpcore.ConnectError instead of httpx.ConnectError). Imported here, it is
# there before any such run.
# pytest-xdist (`--dist loadfile`, as scripts/check runs the suite) hands files to its workers in
# collection order; these take longest (the first over a minute), so they start first instead of
# running on alone after everything else. Slowest first; the rest keep their order.
SLOWEST_FILES = (
    "test_swarm_machines.py",
    "test_pytest_plugin.py",
    "test_pytest_limits.py",
    "test_pytest_explain.py",
    "test_pytest_attach.py",
    "test_lifetime.py",
    "test_cli.py",
    "test_replay.py",
)

# Hypothesis's pytest plugin, loaded here (its documented way) rather than from its entry point,
# which pyproject.toml's addopts turn off: its end-of-session summary imports all of hypothesis
# in every session, and pytest rewrites the asserts of every module of a plugin's distribution,
# again on every start where no bytecode is written. So a session of system tests alone, which
# never loads this file, does not pay for it (0.25 s, 1.2 s under PYTHONDONTWRITEBYTECODE).
pytest_plugins = ["_hypothesis_pytestplugin"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)


@pytest.fixture
def node_image_tags() -> Iterator[None]:
    """Held by a test that adds a tag to the node image (`harness images push`) or checks its
    tags, so that under pytest-xdist neither sees the other's: an exclusive lock on a file that
    every worker sees."""
    with (Path(tempfile.gettempdir()) / "harness-tests-node-image-tags.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def free_loopback_ip(ports: Sequence[int]) -> str:
    rng = random.Random()
    for _ in range(200):
        ip = f"127.{rng.randint(100, 250)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind((ip, port))
        except OSError:
            continue
        return ip
    raise RuntimeError("no free loopback address found in 200 tries")


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A URL whose connections are refused: its port is bound, not listening."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{taken.getsockname()[1]}"


@pytest.fixture
def loopback_ip() -> str:
    """A 127.x.y.z address on which the usual node ports are free."""
    return free_loopback_ip([80, 443, 7070, 8080, 9090, 9091, 9324, 9325])


@pytest.fixture
def make_loopback_ip() -> Callable[[], str]:
    """A factory of further free loopback addresses, for tests that need several."""
    return lambda: free_loopback_ip([80, 443, 7070, 8080, 9090, 9091, 9324, 9325])


@dataclass
class Program:
    """A node program started by a test."""

    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM the process and wait for it; return its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def wait_for_http(
    url: str,
    timeout: float = 10.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Poll `url` until it answers (any status); fail with the last error after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before {url} answered")
        try:
            return httpx.get(url, timeout=1.0, headers=headers)
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer within {timeout}s; last error: {last!r}")


@pytest.fixture
def start_program(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Program]]:
    """Start `python -m harness.node.<module> *args`; wait for `ready_url` if given."""
    started: list[Program] = []

    def start(
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        ready_url: str | None = None,
        ready_headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Program:
        log = tmp_path / f"{module.rsplit('.', 1)[-1]}-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        program = Program(process, log)
        started.append(program)
        if ready_url is not None:
            try:
                wait_for_http(ready_url, timeout, process=process, headers=ready_headers)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- {module} log ---\n{program.log_text()}") from None
        return program

    yield start
    for program in started:
        # Kill the whole group, also when the leader exited: nothing may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(program.process.pid, signal.SIGKILL)
        program.process.wait(timeout=10)
