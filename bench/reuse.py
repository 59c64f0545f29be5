"""Reuse benchmark: what a reset costs against a fresh start, and what the developer's loop
(one system test, run again and again) costs on a testnet left up against a fresh one.

    .venv/bin/python bench/reuse.py [--backends local,docker] [--rounds 10] [--starts 3]
                                    [--repeat 5] [-k test_partition_and_heal] [--baseline REV]

1. Reset against a fresh start, in this process, on the default testnet of `harness up` (a
   1-node system subnet, a 4-node cloud-engine subnet with ic-gateway, an API boundary node):
   `--starts` times `Testnet(...)` to `start()` returning (every node healthy; "fresh start")
   and, apart, its `close()` ("teardown"); then one testnet, reset `--rounds` times after a
   "dirty" round (a replica SIGKILLed by `node.kill_process` and answering again, a
   cloud-engine node unassigned by a registry version and its replica stopped: what a test
   leaves) and `--rounds` times right after a reset ("clean"). Each reset is timed around
   `Testnet.reset()`, its parts (heal, registry restore, the orchestrators' `POST /reset`,
   the wait for healthy nodes, the metrics baseline) by wrapping the testnet's own methods.
   Ratio: reset / fresh start. Targets (the issue): reset <= 0.2 s local, <= 1 s docker.

2. The developer's loop: the wall time of `python -m pytest systests/test_faults.py -k
   test_partition_and_heal -p no:cacheprovider -q` (plus `--backend B`, an artifacts directory
   of its own and a stamp plugin, see below), run from the repository root as a subprocess,
   with and without `--testnet ID` (a testnet of that file's `topology()` brought up once
   beforehand with `harness up --detach --topology systests/test_faults.py`), alternated
   `--repeat` times after one untimed run of each; and in both bytecode modes: "written"
   (PYTHONDONTWRITEBYTECODE unset; the .pyc go to a PYTHONPYCACHEPREFIX of the benchmark's, so
   the checkout's tree is left as it is, and are warm after the untimed runs) and
   "DONTWRITE" (PYTHONDONTWRITEBYTECODE=1, the .pyc the tree and the venv have, if any, read).
   Peers in the same rounds: pytest running one empty test without the harness plugin
   (`-p no:harness`: the floor) and with it (the plugin's fixed cost). Each run's phases come
   from a small plugin loaded with `-p` from a temporary directory on PYTHONPATH: wall-clock
   stamps of pytest loaded, plugins configured, collection, the fixtures' setup, the test body
   (`pytest_pyfunc_call`), the harness's work after it (heal, artifacts, checks), teardown,
   `pytest_sessionfinish` (the harness waits there for the test's report, rendered by a
   process of its own: timed from its submission to its file's time) and the interpreter's
   exit (from the parent). Import cost, per mode:
   `python -X importtime -c "import harness.pytest_plugin"` (and, where that entry module
   registers the plugin proper itself, `harness.pytest_plugin.plugin` too; alone and after
   `import pytest`, as in a pytest run), summed over the top-level harness imports, with the
   heaviest packages; the parts of the session fixture `harness_run` (sweep, Run) in a fresh
   interpreter; how long interpreters take to exit after their atexit handlers.
   With `--baseline REV`, the fresh run is also timed with the harness of commit REV, run
   from a worktree of it (its `harness` comes first on sys.path there), in the same rounds.
   Ratios: attached / fresh, attached / pytest floor, and what the fresh run spends around its
   test (before it, after its result) against the baseline's. Targets (the issue): attached
   <= 1 s local, <= 2 s docker, in both modes; around the test halved against the baseline.

3. The plugins beside the harness (`--parts plugins`): the pytest floor above (one empty test,
   `-p no:harness`) with every installed pytest11 plugin, without each plugin distribution,
   without any, and with `--assert=plain` (pytest rewrites the asserts of every module of a
   plugin's distribution as it imports it, again on every start where no bytecode is written),
   in both bytecode modes, alternated `--repeat` times: what each costs every pytest start.

Everything runs in a state root of its own (HARNESS_STATE_DIR, a temporary directory), which
is swept and removed at the end, also on Ctrl-C or SIGTERM; the detached testnets also get
`--ttl 1h`. The docker backend is measured when an engine answers; its node image is built
before any timing. Prints one JSON document on stdout and tables on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    PYTHON,
    REPO,
    BenchError,
    console,
    emit,
    fmt_s,
    machine,
    median,
    stop_on_sigterm,
    verdict,
)
from rich.table import Table

TARGET_RESET = {"local": 0.2, "docker": 1.0}
TARGET_ATTACHED = {"local": 1.0, "docker": 2.0}
TEST_FILE = "systests/test_faults.py"
FALLBACK_KEYWORD = "test_pause_and_resume"
START_TIMEOUT = 120.0
RESET_TIMEOUT = 60.0
PYTEST_TIMEOUT = 300.0
MODES = ("written", "dontwrite")
MODE_LABEL = {"written": "written", "dontwrite": "DONTWRITE=1"}
STAMPS_MODULE = "reuse_stamps"
# The reset's parts: (owner, method) wrapped on the testnet instance, by label.
RESET_PARTS = (
    ("testnet", "heal_all", "heal"),
    ("registry", "restore", "registry restore"),
    ("testnet", "_reset_orchestrators", "orchestrators reset"),
    ("testnet", "await_all_healthy", "healthy wait"),
    ("testnet", "_scrape_baseline", "baseline scrape"),
)

# The stamp plugin, written to a temporary directory and loaded with `-p reuse_stamps`. Wall
# clock (time.time()) throughout, so its stamps line up with the parent's.
STAMPS_PLUGIN = '''
"""Wall-clock stamps of a pytest session's phases, written as JSON to $REUSE_STAMPS_FILE at
exit (bench/reuse.py)."""
import atexit
import json
import os
import sys
import time

import pytest

_STAMPS = {"plugin_imported": time.time()}
_REGISTERED = []
_REPORTS = []
_RENDERS = []


def _stamp(name):
    _STAMPS.setdefault(name, time.time())


def _created():
    """When this process was created: its start in clock ticks after boot (/proc/self/stat),
    against CLOCK_BOOTTIME (psutil's create_time is anchored on a whole-second boot time)."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return None


def _written(renders):
    """[submitted, report.html written] of each report (its renderer is another process)."""
    spans = []
    for submitted, directory in renders:
        try:
            spans.append([submitted, os.stat(os.path.join(directory, "report.html")).st_mtime])
        except OSError:
            pass
    return spans


def _write():
    _STAMPS["atexit"] = time.time()
    heavy = ("matplotlib", "aiohttp", "docker", "httpx", "rich", "uvicorn", "hypothesis")
    document = {
        "stamps": _STAMPS,
        "process_created": _created(),
        "registered": _REGISTERED,
        "reports": _REPORTS,
        "renders": _written(_RENDERS),
        "modules": len(sys.modules),
        "heavy_modules_loaded": [name for name in heavy if name in sys.modules],
    }
    with open(os.environ["REUSE_STAMPS_FILE"], "w") as out:
        json.dump(document, out)


atexit.register(_write)


def pytest_plugin_registered(plugin, plugin_name, manager):
    _REGISTERED.append([str(plugin_name), time.time()])


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    _stamp("configure")


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    _stamp("sessionstart")
    worker = sys.modules.get("harness.driver.report_worker")
    writer = getattr(worker, "ReportWriter", None)
    original = getattr(writer, "submit", None)
    if original is None:
        return

    def submit_timed(self, directory, page):
        _RENDERS.append([time.time(), str(directory)])
        return original(self, directory, page)

    writer.submit = submit_timed


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    _stamp("collection_finish")


def pytest_runtest_logstart(nodeid, location):
    _stamp("logstart")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    _stamp("setup_start")
    try:
        return (yield)
    finally:
        _stamp("setup_end")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    began = time.time()
    try:
        return (yield)
    finally:
        _STAMPS.setdefault("fixture:" + fixturedef.argname, [began, time.time()])


def pytest_fixture_post_finalizer(fixturedef, request):
    _stamp("finalized:" + fixturedef.argname)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item):
    _stamp("call_start")
    try:
        return (yield)
    finally:
        _stamp("call_end")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    _stamp("body_start")
    try:
        return (yield)
    finally:
        _stamp("body_end")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    _stamp("teardown_start")
    try:
        return (yield)
    finally:
        _stamp("teardown_end")


def pytest_runtest_logreport(report):
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[-1])
    _REPORTS.append([report.when, report.outcome, reason])


def pytest_runtest_logfinish(nodeid, location):
    _stamp("logfinish")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    _stamp("sessionfinish_start")
    try:
        return (yield)
    finally:
        _stamp("sessionfinish_end")


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    _stamp("unconfigure")
'''


def note(text: str) -> None:
    console.log(text)


def r4(value: float) -> float:
    return round(value, 4)


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min and max of seconds, and the values; {"n": 0} for none."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": r4(median(values)),
        "min": r4(min(values)),
        "max": r4(max(values)),
        "values": [r4(v) for v in values],
    }


# ----------------------------------------------------------------------------- 1. reset
class PartTimer:
    """Times the parts of `Testnet.reset()` by wrapping the testnet's own methods on the
    instance (the class is left alone); a method that is not there is not timed."""

    def __init__(self, testnet: Any) -> None:
        self.current: dict[str, float] = {}
        owners = {"testnet": testnet, "registry": testnet.registry}
        for owner_name, method, label in RESET_PARTS:
            owner = owners[owner_name]
            original = getattr(owner, method, None)
            if callable(original):
                setattr(owner, method, self._timed(original, label))

    def _timed(self, original: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - began
                self.current[label] = self.current.get(label, 0.0) + took

        return timed


def timed_reset(testnet: Any, timer: PartTimer) -> dict[str, Any]:
    timer.current = {}
    began = time.perf_counter()
    reported = testnet.reset(timeout=RESET_TIMEOUT)
    took = time.perf_counter() - began
    parts = {label: r4(seconds) for label, seconds in timer.current.items()}
    parts["other"] = r4(max(0.0, took - sum(timer.current.values())))
    return {"s": r4(took), "reported_s": r4(float(reported)), "parts": parts}


def wait_down(node: Any, timeout: float = 30.0) -> float:
    """Seconds until the node's replica stops answering its status (bounded)."""
    began = time.perf_counter()
    while True:
        try:
            node.status()
        except Exception:
            return time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            raise BenchError(f"{node.node_id}: replica still answers {timeout:g} s after unassign")
        time.sleep(0.02)


def dirty(testnet: Any, victim: Any, moved: Any) -> dict[str, Any]:
    """What a test leaves: a replica SIGKILLed (answering again), a node unassigned."""
    began = time.perf_counter()
    victim.kill_process("replica")
    victim.await_status_is_healthy(timeout=30)
    back = time.perf_counter() - began
    version = testnet.registry.unassign_node(moved.node_id)
    down = wait_down(moved)
    return {
        "killed": victim.node_id,
        "healthy_again_s": r4(back),
        "unassigned": moved.node_id,
        "registry_version": version,
        "replica_stopped_s": r4(down),
    }


def reset_part(backend: str, rounds: int, starts: int) -> dict[str, Any]:
    from harness.cli import default_topology
    from harness.driver import HarnessError, Run, SubnetType, Testnet

    result: dict[str, Any] = {"backend": backend}
    run = Run.create("bench")
    try:
        fresh: list[float] = []
        teardown: list[float] = []
        for index in range(starts):
            note(f"reset/{backend}: fresh start {index + 1}/{starts}")
            began = time.perf_counter()
            testnet = Testnet(default_topology().with_name("reuse"), run, backend)
            try:
                testnet.start(timeout=START_TIMEOUT)
                fresh.append(time.perf_counter() - began)
            finally:
                closing = time.perf_counter()
                testnet.close()
                teardown.append(time.perf_counter() - closing)
        note(f"reset/{backend}: {rounds} dirty and {rounds} clean resets")
        testnet = Testnet(default_topology().with_name("reuse"), run, backend)
        try:
            testnet.start(timeout=START_TIMEOUT)
            result["nodes"] = len(testnet.nodes())
            timer = PartTimer(testnet)
            snapshot = testnet.topology_snapshot()
            in_subnets = [n for s in snapshot.subnets for n in s.nodes]
            cloud = [n for s in snapshot.subnets_of_type(SubnetType.CLOUD_ENGINE) for n in s.nodes]
            first = timed_reset(testnet, timer)
            dirty_rounds: list[dict[str, Any]] = []
            clean_rounds: list[dict[str, Any]] = []
            for index in range(rounds):
                victim, moved = in_subnets[index % len(in_subnets)], cloud[index % len(cloud)]
                before = dirty(testnet, victim, moved)
                dirty_rounds.append({**timed_reset(testnet, timer), "before": before})
                clean_rounds.append(timed_reset(testnet, timer))
                note(
                    f"reset/{backend} {index + 1:2}/{rounds}: dirty "
                    f"{dirty_rounds[-1]['s'] * 1000:.0f} ms, clean "
                    f"{clean_rounds[-1]['s'] * 1000:.0f} ms"
                )
        finally:
            testnet.close()
    except HarnessError as exc:
        result["error"] = str(exc).splitlines()[0][:300]
        return result
    finally:
        run.close()
    start_median = median(fresh)
    result.update(
        {
            "fresh_start_s": stats(fresh),
            "teardown_s": stats(teardown),
            "first_reset_after_start": first,
            "reset_dirty_s": stats([t["s"] for t in dirty_rounds]),
            "reset_clean_s": stats([t["s"] for t in clean_rounds]),
            "parts_dirty_median_s": _parts_median(dirty_rounds),
            "parts_clean_median_s": _parts_median(clean_rounds),
            "ratio_dirty_to_start": round(median([t["s"] for t in dirty_rounds]) / start_median, 3),
            "ratio_clean_to_start": round(median([t["s"] for t in clean_rounds]) / start_median, 3),
            "dirty_rounds": dirty_rounds,
            "clean_rounds": clean_rounds,
        }
    )
    return result


def _parts_median(rounds: list[dict[str, Any]]) -> dict[str, float]:
    labels = [label for _, _, label in RESET_PARTS] + ["other"]
    return {
        label: r4(median([t["parts"].get(label, 0.0) for t in rounds]))
        for label in labels
        if any(label in t["parts"] for t in rounds)
    }


# ----------------------------------------------------------------------------- 2. the loop
@dataclass
class Workspace:
    """The benchmark's temporary things: stamp plugin, artifacts, logs, pycache, floor test."""

    root: Path
    plugin_dir: Path = field(init=False)
    artifacts: Path = field(init=False)
    logs: Path = field(init=False)
    pycache: Path = field(init=False)
    floor_test: Path = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.plugin_dir = self.root / "plugin"
        self.artifacts = self.root / "artifacts"
        self.logs = self.root / "logs"
        self.pycache = self.root / "pycache"
        for path in (self.plugin_dir, self.artifacts, self.logs, self.pycache):
            path.mkdir(parents=True, exist_ok=True)
        (self.plugin_dir / f"{STAMPS_MODULE}.py").write_text(STAMPS_PLUGIN)
        self.floor_test = self.root / "floor" / "test_floor.py"
        self.floor_test.parent.mkdir()
        self.floor_test.write_text("def test_floor() -> None:\n    pass\n")

    def env(self, mode: str, stamps: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPYCACHEPREFIX", None)
        if mode == "dontwrite":
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        if stamps is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.plugin_dir), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            env["REUSE_STAMPS_FILE"] = str(stamps)
        return env

    def next_files(self, label: str) -> tuple[Path, Path]:
        self.count += 1
        stem = f"{self.count:03d}-{label}"
        return self.logs / f"{stem}.log", self.logs / f"{stem}.json"


@dataclass
class Timed:
    """A child's wall time (perf_counter), the wall clock when it was spawned and when its exit
    was seen, its exit code and, when captured, its output."""

    wall: float
    spawned: float
    ended: float
    code: int
    stdout: str = ""
    stderr: str = ""


def run_timed(
    argv: list[str],
    env: dict[str, str],
    *,
    capture: bool = False,
    log: Path | None = None,
    timeout: float = 120.0,
    cwd: Path = REPO,
) -> Timed:
    """Run `argv` from the repository root in its own process group and time it. Its exit is
    waited for without polling (`wait(timeout=...)` polls with sleeps of up to 50 ms, which
    would round every wall time up by as much): a timer interrupts the group at `timeout`
    (SIGINT, so that pytest tears down what it started) and kills it 60 s later; Ctrl-C does
    the same at once."""
    out: Any = subprocess.PIPE if capture else subprocess.DEVNULL
    with log.open("wb") if log is not None else contextlib.nullcontext() as sink:
        spawned = time.time()
        began = time.perf_counter()
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink if sink is not None else out,
            stderr=subprocess.STDOUT if sink is not None else out,
            start_new_session=True,
            text=capture,
        )
        timers = [
            threading.Timer(timeout, _signal_group, (process, signal.SIGINT)),
            threading.Timer(timeout + 60, _signal_group, (process, signal.SIGKILL)),
        ]
        for timer in timers:
            timer.daemon = True
            timer.start()
        try:
            stdout, stderr = process.communicate()
            wall = time.perf_counter() - began
            ended = time.time()
        finally:
            for timer in timers:
                timer.cancel()
            if process.poll() is None:
                _signal_group(process, signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait(timeout=10)
    return Timed(wall, spawned, ended, process.returncode, stdout or "", stderr or "")


def _signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def run_checked(argv: list[str], env: dict[str, str], what: str) -> Timed:
    """`run_timed` with the output captured; `BenchError` when it fails."""
    done = run_timed(argv, env, capture=True)
    if done.code != 0:
        raise BenchError(f"{what} exited {done.code}: {done.stderr.strip()[-500:]}")
    return done


def plugin_entry_point() -> str:
    """The name of the harness's pytest11 entry point (what `-p no:NAME` disables)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for name, target in project.get("entry-points", {}).get("pytest11", {}).items():
        if target == "harness.pytest_plugin":
            return str(name)
    return "harness"


def run_pytest(
    argv: list[str], env: dict[str, str], log: Path, stamps: Path, cwd: Path = REPO
) -> dict[str, Any]:
    """Run a pytest command from the repository root in its own process group; its wall
    time, exit code, stamps and outcome. Ctrl-C or a timeout stops it (SIGINT first, so that
    pytest tears down what it started)."""
    stamps.unlink(missing_ok=True)
    done = run_timed(argv, env, log=log, timeout=PYTEST_TIMEOUT, cwd=cwd)
    wall, code, spawned, ended = done.wall, done.code, done.spawned, done.ended
    document: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        document = json.loads(stamps.read_text())
    reports = document.get("reports", [])
    outcomes = [outcome for _, outcome, _ in reports]
    if "failed" in outcomes:
        outcome = "failed"
    elif "skipped" in outcomes:
        outcome = "skipped"
    elif reports:
        outcome = "passed"
    else:
        outcome = "none"
    reason = next((why for _, o, why in reports if o == "skipped"), "")
    tail = log.read_text(errors="replace").strip().splitlines()[-12:]
    return {
        "wall_s": r4(wall),
        "code": code,
        "outcome": outcome,
        "skip_reason": reason,
        "spawned": spawned,
        "ended": ended,
        "document": document,
        "tail": tail,
    }


def journal(artifacts: Path, testnet_id: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The attach and reset events the run's test left in its artifacts (the testnet's
    journal), with their times."""
    found: list[dict[str, Any]] = []
    for path in artifacts.glob(f"*/{testnet_id}/events.jsonl"):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if (
                        event.get("kind") in ("attach", "reset")
                        and run["spawned"] <= event.get("t", 0) <= run["ended"]
                    ):
                        found.append(
                            {"t": event["t"], "kind": event["kind"], "text": event["text"]}
                        )
    return sorted(found, key=lambda e: float(e["t"]))


RESET_TEXT = re.compile(r"reset in ([0-9.]+) s")


def phases(run: dict[str, Any]) -> dict[str, float]:
    """A run's phases (seconds) from its stamps; a phase whose stamps are missing is left out."""
    doc = run["document"]
    s: dict[str, Any] = doc.get("stamps", {})
    t0, end = run["spawned"], run["ended"]
    out: dict[str, float] = {}

    def span(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            out[name] = r4(b - a)

    span("wall", t0, end)
    # pytest_loaded: spawn to the stamp plugin's import (`-p` plugins come before the entry
    # points); plugins_configured: to the first pytest_configure hook (the entry points
    # imported, the ini read); collection: every pytest_configure hook, sessionstart and the
    # collection.
    span("pytest_loaded", t0, s.get("plugin_imported"))
    span("plugins_configured", s.get("plugin_imported"), s.get("configure"))
    # Each plugin registered after this one: the time since the one before it (an entry
    # point's is its import); the gaps of 5 ms or more.
    # The harness's entry point may register the plugin proper (harness.pytest_plugin.plugin)
    # itself: the harness's import is the gaps of both.
    previous = s.get("plugin_imported")
    for name, at in doc.get("registered", []):
        if previous is not None and at - previous >= 0.005:
            harness = name == "harness" or name.startswith("harness.")
            key = "harness_plugin_import" if harness else f"import:{name}"
            out[key] = r4(out.get(key, 0.0) + at - previous)
        previous = at if previous is None else max(previous, at)
    span("collection", s.get("configure"), s.get("collection_finish"))
    span("before_first_test", t0, s.get("setup_start"))
    span("setup", s.get("setup_start"), s.get("setup_end"))
    for fixture in ("testnet", "harness_run", "testnet_factory"):
        pair = s.get(f"fixture:{fixture}")
        if isinstance(pair, list):
            out[f"fixture_{fixture}"] = r4(pair[1] - pair[0])
    pair = s.get("fixture:testnet")
    for event in run.get("journal", []):
        if event["kind"] == "attach" and "attached by" in event["text"] and pair:
            out["attach"] = r4(event["t"] - pair[0])
        found = RESET_TEXT.search(event["text"]) if event["kind"] == "reset" else None
        if found:
            out["reset"] = float(found[1])
    span("call", s.get("call_start"), s.get("call_end"))
    span("body", s.get("body_start"), s.get("body_end"))
    span("after_body", s.get("body_end"), s.get("call_end"))
    span("report_hooks", s.get("call_end"), s.get("teardown_start"))
    span("teardown", s.get("teardown_start"), s.get("teardown_end"))
    span("testnet_release", s.get("teardown_start"), s.get("finalized:testnet"))
    span("factory_release", s.get("finalized:testnet"), s.get("finalized:testnet_factory"))
    span("after_result", s.get("teardown_end"), end)
    span("sessionfinish", s.get("sessionfinish_start"), s.get("sessionfinish_end"))
    renders = doc.get("renders", [])
    if renders:
        out["report_render"] = r4(sum(b - a for a, b in renders))
        last = max(b for _, b in renders)
        if s.get("teardown_end") is not None:
            out["report_after_teardown"] = r4(max(0.0, last - s["teardown_end"]))
    span("sessionfinish_to_exit", s.get("sessionfinish_end"), end)
    span("interpreter_exit", s.get("atexit"), end)
    if "before_first_test" in out and "after_result" in out:
        out["around_tests"] = r4(out["before_first_test"] + out["after_result"])
    return out


def median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    each = [phases(run) for run in runs]
    keys: list[str] = []
    for p in each:
        keys += [k for k in p if k not in keys]
    return {k: r4(median([p[k] for p in each if k in p])) for k in keys}


@dataclass
class Variant:
    """One command of the loop (fresh, attached, floor, plugin; baseline: fresh at another
    commit, from a worktree of it) and its timed runs."""

    name: str
    argv: list[str]
    runs: list[dict[str, Any]] = field(default_factory=list)
    cwd: Path = REPO

    def summary(self) -> dict[str, Any]:
        good = [r for r in self.runs if r["outcome"] == "passed" and r["code"] == 0]
        walls = [r["wall_s"] for r in good]
        bodies = [phases(r).get("body") for r in good]
        overhead = [w - b for w, b in zip(walls, bodies, strict=True) if b is not None]
        result: dict[str, Any] = {
            "argv": self.argv,
            "wall_s": stats(walls),
            "bad_runs": [
                {k: r[k] for k in ("code", "outcome", "skip_reason", "tail")}
                for r in self.runs
                if r not in good
            ],
        }
        if overhead:
            result["wall_minus_body_s"] = stats(overhead)
        if good:
            result["phases_median_s"] = median_phases(good)
            result["heavy_modules_loaded"] = good[-1]["document"].get("heavy_modules_loaded")
            result["modules_loaded"] = good[-1]["document"].get("modules")
        return result


def harness_cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "harness.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def up_detached(backend: str, work: Workspace) -> tuple[str, float]:
    """`harness up --detach` of the test file's topology; its testnet id and the seconds."""
    began = time.perf_counter()
    done = harness_cli(
        "up",
        "--detach",
        "--json",
        "--backend",
        backend,
        "--topology",
        TEST_FILE,
        "--ttl",
        "1h",
        "--artifacts-dir",
        str(work.artifacts / "up"),
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchError(f"harness up --detach failed: {done.stderr.strip()[-500:]}")
    testnet_id = str(json.loads(done.stdout)["testnet"])
    listed = json.loads(harness_cli("ls", "--json").stdout)
    if not any(e["testnet"] == testnet_id and e["state"] == "up" for e in listed):
        raise BenchError(f"harness ls --json does not list {testnet_id} as up: {listed}")
    return testnet_id, took


def tree_pyc() -> int:
    """How many .pyc the checkout's harness/ and systests/ hold (what DONTWRITE mode reads)."""
    return sum(1 for top in ("harness", "systests") for _ in (REPO / top).rglob("*.pyc"))


def loop_part(
    backend: str,
    repeat: int,
    keyword: str,
    work: Workspace,
    import_repeat: int,
    baseline: Path | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": backend}
    note(f"loop/{backend}: harness up --detach --topology {TEST_FILE}")
    testnet_id, up_s = up_detached(backend, work)
    result.update({"testnet": testnet_id, "up_detach_s": r4(up_s)})
    entry_point = plugin_entry_point()
    try:
        for mode in MODES:
            result[mode] = loop_mode(
                backend,
                mode,
                repeat,
                keyword,
                testnet_id,
                entry_point,
                work,
                import_repeat,
                baseline,
            )
            keyword = result[mode]["keyword"]  # a fallback chosen in one mode holds for both
    finally:
        note(f"loop/{backend}: harness down {testnet_id}")
        done = harness_cli("down", testnet_id, timeout=180)
        result["down"] = (done.stdout or done.stderr).strip()[-300:]
    return result


def loop_mode(
    backend: str,
    mode: str,
    repeat: int,
    keyword: str,
    testnet_id: str,
    entry_point: str,
    work: Workspace,
    import_repeat: int,
    baseline: Path | None = None,
) -> dict[str, Any]:
    stamp_args = ["-p", STAMPS_MODULE]

    def test_argv(k: str, attached: bool) -> list[str]:
        argv = [PYTHON, "-m", "pytest", TEST_FILE, "-k", k, "-p", "no:cacheprovider", "-q"]
        argv += ["--backend", backend] if backend != "local" else []
        argv += ["--testnet", testnet_id] if attached else []
        return [*argv, "--artifacts-dir", str(work.artifacts / mode), *stamp_args]

    floor_base = [PYTHON, "-m", "pytest", str(work.floor_test), "-p", "no:cacheprovider", "-q"]
    floor_base += ["-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO)]
    result: dict[str, Any] = {"mode": mode, "tree_pyc_before": tree_pyc()}

    def once(variant: Variant) -> dict[str, Any]:
        log, stamps = work.next_files(f"{backend}-{mode}-{variant.name}")
        run = run_pytest(variant.argv, work.env(mode, stamps), log, stamps, variant.cwd)
        if variant.name == "attached":
            run["journal"] = journal(work.artifacts / mode, testnet_id, run)
        return run

    # The untimed first runs: warm caches, and a check that the test runs (not skipped).
    fresh = Variant("fresh", test_argv(keyword, False))
    first = once(fresh)
    note(f"loop/{backend}/{MODE_LABEL[mode]}: untimed fresh run {first['outcome']}")
    if first["outcome"] == "skipped" and keyword != FALLBACK_KEYWORD:
        result["skipped"] = {"keyword": keyword, "reason": first["skip_reason"]}
        note(f"[yellow]{keyword} skipped ({first['skip_reason']}): using {FALLBACK_KEYWORD}")
        keyword = FALLBACK_KEYWORD
        fresh = Variant("fresh", test_argv(keyword, False))
        first = once(fresh)
    if first["outcome"] != "passed" or first["code"] != 0:
        raise BenchError(
            f"{backend}/{mode}: the fresh run {first['outcome']} (exit {first['code']}):\n"
            + "\n".join(first["tail"])
        )
    result["keyword"] = keyword
    attached = Variant("attached", test_argv(keyword, True))
    floor = Variant("floor", [*floor_base, "-p", f"no:{entry_point}", *stamp_args])
    plugin_args = ["--artifacts-dir", str(work.artifacts / "floor")]
    plugin = Variant("plugin", [*floor_base, *plugin_args, *stamp_args])
    untimed = once(attached)
    if untimed["outcome"] != "passed" or untimed["code"] != 0:
        raise BenchError(
            f"{backend}/{mode}: the attached run {untimed['outcome']} (exit {untimed['code']}):"
            "\n" + "\n".join(untimed["tail"])
        )
    once(floor)
    once(plugin)
    order = [fresh, attached, floor, plugin]
    if baseline is not None:  # the same fresh run, with the harness of another commit
        base = Variant("baseline", test_argv(keyword, False), cwd=baseline)
        checked = once(base)
        if checked["outcome"] != "passed" or checked["code"] != 0:
            raise BenchError(
                f"{backend}/{mode}: the baseline run {checked['outcome']} (exit "
                f"{checked['code']}):\n" + "\n".join(checked["tail"])
            )
        order.append(base)
    for index in range(repeat):
        for variant in order if index % 2 == 0 else order[::-1]:
            variant.runs.append(once(variant))
        note(
            f"loop/{backend}/{MODE_LABEL[mode]} {index + 1}/{repeat}: "
            + ", ".join(f"{v.name} {v.runs[-1]['wall_s']:.2f} s" for v in order)
        )
    summaries = {v.name: v.summary() for v in order}
    result.update(summaries)
    result["import"] = import_cost(mode, work, import_repeat)
    result["tree_pyc_after"] = tree_pyc()
    fresh_wall = summaries["fresh"]["wall_s"].get("median")
    attached_wall = summaries["attached"]["wall_s"].get("median")
    floor_wall = summaries["floor"]["wall_s"].get("median")
    if fresh_wall and attached_wall and floor_wall:
        result["ratio_attached_to_fresh"] = round(attached_wall / fresh_wall, 3)
        result["ratio_attached_to_floor"] = round(attached_wall / floor_wall, 3)
    if "baseline" in summaries:
        around = {name: around_tests(summaries[name]) for name in ("fresh", "baseline")}
        result["around_tests_s"] = around
        if around["fresh"] is not None and around["baseline"]:
            result["ratio_around_to_baseline"] = round(around["fresh"] / around["baseline"], 3)
    return result


def worktree(rev: str, where: Path) -> Path:
    """A worktree of commit `rev` at `where`: run from there, its `harness` is imported (the
    working directory comes before the editable install's finder)."""
    done = subprocess.run(
        ["git", "worktree", "add", "--detach", str(where), rev],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"git worktree add {rev}: {done.stderr.strip()}")
    return where


def around_tests(summary: dict[str, Any]) -> float | None:
    """What a run spends around its test (the median over runs of before the first test plus
    after its result)."""
    value = summary.get("phases_median_s", {}).get("around_tests")
    return None if value is None else float(value)


# ----------------------------------------------------------------------------- 3. plugins
def third_party_plugins() -> dict[str, list[str]]:
    """The pytest11 entry points installed beside the harness's, by distribution."""
    from importlib.metadata import entry_points

    found: dict[str, list[str]] = {}
    for point in entry_points(group="pytest11"):
        dist = point.dist.name if point.dist is not None else point.name
        if point.value.partition(".")[0] != "harness":
            found.setdefault(dist, []).append(point.name)
    return found


def plugins_part(repeat: int, work: Workspace) -> dict[str, Any]:
    """The pytest floor (one empty test, `-p no:harness`) with every other installed plugin,
    without each plugin distribution, without any, and with `--assert=plain`; alternated,
    `repeat` times after one untimed run of each, in both bytecode modes."""
    entry_point = plugin_entry_point()
    plugins = third_party_plugins()
    base = [PYTHON, "-m", "pytest", str(work.floor_test), "-p", "no:cacheprovider", "-q"]
    base += ["-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "-p", f"no:{entry_point}"]
    configs: dict[str, list[str]] = {"every installed plugin": []}
    for dist, names in sorted(plugins.items()):
        configs[f"without {dist}"] = [arg for name in names for arg in ("-p", f"no:{name}")]
    configs["without any"] = [arg for v in list(configs.values())[1:] for arg in v]
    configs["every plugin, --assert=plain"] = ["--assert=plain"]
    result: dict[str, Any] = {"plugins": plugins, "configs": configs}
    for mode in MODES:
        env = work.env(mode)
        walls: dict[str, list[float]] = {name: [] for name in configs}
        for index in range(repeat + 1):
            for name, extra in configs.items() if index % 2 else reversed(configs.items()):
                done = run_timed([*base, *extra], env, timeout=PYTEST_TIMEOUT)
                if done.code != 0:
                    raise BenchError(f"pytest floor {name} ({mode}) exited {done.code}")
                if index:  # the first round is untimed
                    walls[name].append(done.wall)
        every = median(walls["every installed plugin"])
        result[mode] = {
            name: {**stats(values), "saving_s": r4(every - median(values))}
            for name, values in walls.items()
        }
        note(f"plugins/{MODE_LABEL[mode]}: floor {every:.2f} s with every installed plugin")
    return result


# ----------------------------------------------------------------------------- import cost
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)\s*$")


@dataclass
class ImportLine:
    name: str
    self_us: int
    cumulative_us: int
    level: int
    children: list[ImportLine] = field(default_factory=list)


def parse_importtime(text: str) -> list[ImportLine]:
    """The import tree of `-X importtime` output (printed children first)."""
    stack: list[ImportLine] = []
    for line in text.splitlines():
        match = IMPORTTIME.match(line)
        if not match:
            continue
        node = ImportLine(
            match[4], int(match[1]), int(match[2]), (len(match[3]) - 1) // 2, children=[]
        )
        while stack and stack[-1].level > node.level:
            node.children.insert(0, stack.pop())
        stack.append(node)
    return stack


def _walk(nodes: list[ImportLine]) -> Iterator[tuple[ImportLine, tuple[str, ...]]]:
    """Every line with the packages of its ancestors."""
    pending: list[tuple[ImportLine, tuple[str, ...]]] = [(n, ()) for n in nodes]
    while pending:
        node, above = pending.pop()
        yield node, above
        package = node.name.split(".")[0]
        pending += [(child, (*above, package)) for child in node.children]


def import_summary(text: str) -> dict[str, Any]:
    roots = [n for n in parse_importtime(text) if n.name.split(".")[0] == "harness"]
    lines = list(_walk(roots))
    by_package: dict[str, float] = {}
    for node, above in lines:
        package = node.name.split(".")[0]
        if package != "harness" and package not in above:
            by_package[package] = by_package.get(package, 0) + node.cumulative_us
    children = sorted((c for root in roots for c in root.children), key=lambda n: -n.cumulative_us)[
        :10
    ]
    heaviest_self = sorted((n for n, _ in lines), key=lambda n: -n.self_us)[:10]
    return {
        "harness_cumulative_ms": round(sum(n.cumulative_us for n in roots) / 1000, 1),
        "harness_own_self_ms": round(
            sum(n.self_us for n, _ in lines if n.name.split(".")[0] == "harness") / 1000, 1
        ),
        "top_packages_ms": {
            k: round(v / 1000, 1) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]
        },
        "top_children_ms": {c.name: round(c.cumulative_us / 1000, 1) for c in children},
        "top_self_ms": {n.name: round(n.self_us / 1000, 1) for n in heaviest_self},
    }


SWEEP_PROBE = """
import json, sys, time
began = time.perf_counter()
import harness.driver.run as run
from harness.driver.backend_registry import backends
took = {"import harness.driver.run": time.perf_counter() - began}
began = time.perf_counter()
found = list(backends())
took["load the backends"] = time.perf_counter() - began
for backend in found:
    began = time.perf_counter()
    backend.sweep(lambda run_id: False)
    took[f"sweep {backend.name} (nothing doomed)"] = time.perf_counter() - began
began = time.perf_counter()
run.sweep()
took["sweep() again"] = time.perf_counter() - began
began = time.perf_counter()
run.Run.create("bench probe").close()
took["Run.create + close"] = time.perf_counter() - began
json.dump(took, sys.stdout)
"""


def sweep_probe(env: dict[str, str], repeat: int) -> dict[str, float]:
    """What the session fixture `harness_run` does (sweep(), Run.create), part by part, in a
    fresh interpreter, as a pytest session's first use: medians of `repeat`."""
    runs: list[dict[str, float]] = []
    for _ in range(repeat):
        done = run_checked([PYTHON, "-c", SWEEP_PROBE], env, "the sweep probe")
        runs.append(json.loads(done.stdout))
    return {k: r4(median([run[k] for run in runs if k in run])) for k in runs[0]}


def python_wall(code: str, env: dict[str, str], repeat: int) -> float:
    times = [run_checked([PYTHON, "-c", code], env, code).wall for _ in range(repeat)]
    return r4(median(times))


# What pytest imports of the harness: its entry point module and, where that one only
# registers the plugin proper when pytest asks (its `PLUGIN`), that module too.
IMPORT_PLUGIN = (
    "import importlib, harness.pytest_plugin as entry; "
    "importlib.import_module(getattr(entry, 'PLUGIN', 'harness.pytest_plugin'))"
)


def import_cost(mode: str, work: Workspace, repeat: int) -> dict[str, Any]:
    """`-X importtime` of the plugin alone and after pytest (as a pytest run imports it), and
    the wall time of interpreters doing nothing, importing pytest, importing the plugin."""
    env = work.env(mode)
    result: dict[str, Any] = {}
    for label, code in (
        ("standalone", IMPORT_PLUGIN),
        ("after_pytest", f"import pytest; {IMPORT_PLUGIN}"),
    ):
        summaries = []
        for _ in range(repeat):
            done = run_checked([PYTHON, "-X", "importtime", "-c", code], env, "-X importtime")
            summaries.append(import_summary(done.stderr))
        summaries.sort(key=lambda s: float(s["harness_cumulative_ms"]))
        chosen = summaries[len(summaries) // 2]  # the median run's
        chosen["harness_cumulative_ms_all"] = [s["harness_cumulative_ms"] for s in summaries]
        result[label] = chosen
    result["sweep_probe_s"] = sweep_probe(env, repeat)
    probes = {
        "python -c pass": "pass",
        "import pytest": "import pytest",
        "import the harness plugin": IMPORT_PLUGIN,
        "import matplotlib.figure": "import matplotlib.figure",
    }
    result["wall_s"] = {label: python_wall(code, env, repeat) for label, code in probes.items()}
    probes.pop("import matplotlib.figure")
    probes["the harness plugin and matplotlib.figure"] = (
        f"{IMPORT_PLUGIN}; import matplotlib.figure"
    )
    result["exit_after_atexit_s"] = {
        label: exit_after_atexit(code, env, repeat) for label, code in probes.items()
    }
    return result


def exit_after_atexit(code: str, env: dict[str, str], repeat: int) -> float:
    """Median seconds from an interpreter's last atexit handler (the first registered runs
    last) to its exit as its parent sees it: the finalization of what `code` imported."""
    program = (
        "import atexit, sys, time\n"
        "atexit.register(lambda: sys.stdout.write(repr(time.time())))\n" + code
    )
    gaps = []
    for _ in range(repeat):
        done = run_checked([PYTHON, "-c", program], env, code)
        gaps.append(done.ended - float(done.stdout))
    return r4(median(gaps))


# ----------------------------------------------------------------------------- the whole
def docker_available() -> str | None:
    """None when a docker engine answers, else why not."""
    try:
        from harness.driver.backends.engine import engine

        engine()
    except Exception as exc:
        return str(exc).splitlines()[0][:300]
    return None


def targets(reset: list[dict[str, Any]], loop: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for r in reset:
        limit = TARGET_RESET.get(r["backend"])
        if limit is None or "error" in r:
            continue
        for kind in ("dirty", "clean"):
            value = r[f"reset_{kind}_s"]["median"]
            checks.append(
                {
                    "target": f"reset ({kind}, median) on {r['backend']} <= {limit:g} s",
                    "value": value,
                    "met": value <= limit,
                }
            )
    for r in loop:
        for mode in MODES:
            ratio = r.get(mode, {}).get("ratio_around_to_baseline")
            if ratio is not None:
                checks.append(
                    {
                        "target": f"fresh run: around its test / baseline's on {r['backend']}, "
                        f"{MODE_LABEL[mode]} <= 0.5",
                        "value": ratio,
                        "met": ratio <= 0.5,
                    }
                )
        limit = TARGET_ATTACHED.get(r["backend"])
        if limit is None:
            continue
        for mode in MODES:
            value = r.get(mode, {}).get("attached", {}).get("wall_s", {}).get("median")
            if value is None:
                continue
            checks.append(
                {
                    "target": f"attached loop wall (median) on {r['backend']}, "
                    f"{MODE_LABEL[mode]} <= {limit:g} s",
                    "value": value,
                    "met": value <= limit,
                }
            )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument("--parts", default="reset,loop,plugins", help="any of reset, loop, plugins")
    parser.add_argument("--rounds", type=int, default=10, help="dirty and clean resets each")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts (median)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per loop command")
    parser.add_argument("--import-repeat", type=int, default=3)
    parser.add_argument("-k", dest="keyword", default="test_partition_and_heal")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the fresh run with the harness of commit REV (a worktree of it), for "
        "what a session spends around its test against that commit's",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not backends or any(b not in TARGET_RESET for b in backends):
        parser.error("--backends takes local and/or docker")
    if not parts or any(p not in ("reset", "loop", "plugins") for p in parts):
        parser.error("--parts takes reset, loop and/or plugins")
    for name in ("rounds", "starts", "repeat", "import_repeat"):
        if not 1 <= getattr(args, name) <= 100:
            parser.error(f"--{name.replace('_', '-')} must be 1-100")
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    root = Path(tempfile.mkdtemp(prefix="bench-reuse-"))
    os.environ["HARNESS_STATE_DIR"] = str(root / "state")  # everything started lives here
    before = machine()
    docker: dict[str, Any] = {"wanted": "docker" in backends}
    if "docker" in backends and ("reset" in parts or "loop" in parts):
        docker["unavailable"] = docker_available()
        if docker["unavailable"]:
            note(f"[yellow]no docker column: {docker['unavailable']}")
            backends.remove("docker")
        else:
            from harness.driver.backends.images import build_node_image

            note("building the node image (not timed)")
            docker["image"] = build_node_image()
    reset: list[dict[str, Any]] = []
    loop: list[dict[str, Any]] = []
    plugins: dict[str, Any] = {}
    try:
        work = Workspace(root / "work")
        baseline = worktree(args.baseline, root / "baseline") if args.baseline else None
        for backend in backends:
            if "reset" in parts:
                reset.append(reset_part(backend, args.rounds, args.starts))
            if "loop" in parts:
                loop.append(
                    loop_part(
                        backend, args.repeat, args.keyword, work, args.import_repeat, baseline
                    )
                )
        if "plugins" in parts:
            plugins = plugins_part(args.repeat, work)
    finally:
        from harness.driver import sweep

        with contextlib.suppress(Exception):
            sweep(everything=True)  # only this state root's runs
        if args.baseline:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(root / "baseline")],
                cwd=REPO,
                capture_output=True,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
    checks = targets(reset, loop)
    document = {
        "benchmark": "reuse",
        "machine_before": before,
        "machine_after": machine(),
        "settings": {
            "backends": backends,
            "parts": parts,
            "rounds": args.rounds,
            "starts": args.starts,
            "repeat": args.repeat,
            "import_repeat": args.import_repeat,
            "keyword": args.keyword,
            "test_file": TEST_FILE,
            "baseline": args.baseline,
        },
        "docker": docker,
        "reset": reset,
        "loop": loop,
        "plugins": plugins,
        "targets": checks,
    }
    tables = [_reset_table(reset), _reset_parts_table(reset)] if reset else []
    if loop:
        tables += [_loop_table(loop), *map(_phases_table, loop), _import_table(loop)]
        tables.append(_sweep_table(loop))
    if plugins:
        tables.append(_plugins_table(plugins))
    emit(document, [*tables, _targets_table(checks)], args.json_out)


# ----------------------------------------------------------------------------- tables
def _reset_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Reset against a fresh start (default testnet; median (max))")
    for column in (
        "backend",
        "fresh start",
        "teardown",
        "reset dirty",
        "reset clean",
        "dirty / start",
        "clean / start",
        "target",
    ):
        table.add_column(column, justify="right")
    for r in results:
        if "error" in r:
            table.add_row(r["backend"], f"[red]{r['error']}[/red]")
            continue
        limit = TARGET_RESET[r["backend"]]

        def mm(s: dict[str, Any]) -> str:
            return f"{fmt_s(s['median'], 3)} ({fmt_s(s['max'], 3)})"

        table.add_row(
            r["backend"],
            mm(r["fresh_start_s"]),
            fmt_s(r["teardown_s"]["median"], 3),
            mm(r["reset_dirty_s"]),
            mm(r["reset_clean_s"]),
            f"{r['ratio_dirty_to_start']:.3f}",
            f"{r['ratio_clean_to_start']:.3f}",
            f"<= {limit:g} s",
        )
    return table


def _reset_parts_table(results: list[dict[str, Any]]) -> Table:
    labels = [label for _, _, label in RESET_PARTS] + ["other"]
    table = Table(title="Where a reset's time goes (medians)")
    table.add_column("backend")
    table.add_column("reset")
    for label in labels:
        table.add_column(label, justify="right")
    for r in results:
        for kind in ("dirty", "clean"):
            parts = r.get(f"parts_{kind}_median_s")
            if parts:
                table.add_row(r["backend"], kind, *(fmt_s(parts.get(x), 3) for x in labels))
    return table


def _loop_table(results: list[dict[str, Any]]) -> Table:
    keywords = sorted({r[m]["keyword"] for r in results for m in MODES if r.get(m)})
    table = Table(
        title=f"The developer's loop ({TEST_FILE} -k {', '.join(keywords)}): wall, median (min)"
    )
    for column in (
        "backend",
        "bytecode",
        "fresh",
        "attached",
        "attached / fresh",
        "attached - body",
        "pytest floor",
        "attached / floor",
        "plugin + empty test",
    ):
        table.add_column(column, justify="right")
    for r in results:
        for mode in MODES:
            m = r.get(mode)
            if not m:
                continue

            def mm(name: str, m: dict[str, Any] = m) -> str:
                s = m[name]["wall_s"]
                if not s.get("n"):
                    return "-"
                return f"{fmt_s(s['median'])} ({fmt_s(s['min'])})"

            overhead = m["attached"].get("wall_minus_body_s", {}).get("median")
            table.add_row(
                r["backend"],
                MODE_LABEL[mode],
                mm("fresh"),
                mm("attached"),
                f"{m.get('ratio_attached_to_fresh', float('nan')):.2f}",
                fmt_s(overhead),
                mm("floor"),
                f"{m.get('ratio_attached_to_floor', float('nan')):.2f}",
                mm("plugin"),
            )
    return table


PHASE_ROWS = (
    ("wall", "wall"),
    ("around_tests", "around the test (before + after)"),
    ("before_first_test", "before the first test"),
    ("pytest_loaded", "  interpreter, pytest"),
    ("plugins_configured", "  plugins loaded"),
    ("harness_plugin_import", "    harness plugin import"),
    ("import:anyio", "    anyio plugin import"),
    ("collection", "  configure, collection"),
    ("setup", "setup"),
    ("fixture_harness_run", "  harness_run (sweep)"),
    ("fixture_testnet", "  testnet fixture"),
    ("attach", "    attach"),
    ("reset", "    reset"),
    ("call", "call"),
    ("body", "  test body"),
    ("after_body", "  heal, artifacts, checks"),
    ("teardown", "teardown"),
    ("testnet_release", "  testnet released"),
    ("factory_release", "  session fixtures"),
    ("after_result", "after the result"),
    ("sessionfinish", "  sessionfinish"),
    ("report_render", "  report: submitted to written"),
    ("report_after_teardown", "  report after teardown"),
    ("sessionfinish_to_exit", "  sessionfinish to exit"),
    ("interpreter_exit", "    after atexit"),
)


def _phases_table(result: dict[str, Any]) -> Table:
    backend = result["backend"]
    table = Table(title=f"Where a run's time goes on {backend} (medians, seconds; DW: DONTWRITE=1)")
    table.add_column("phase", no_wrap=True)
    columns = [
        (mode, variant)
        for variant in ("fresh", "baseline", "attached", "floor", "plugin")
        for mode in MODES
        if result.get(mode) and variant in result[mode]
    ]
    for mode, variant in columns:
        table.add_column(
            f"{variant} {MODE_LABEL[mode].replace('DONTWRITE=1', 'DW')}", justify="right"
        )
    for key, label in PHASE_ROWS:
        cells = []
        for mode, variant in columns:
            p = result[mode][variant].get("phases_median_s", {})
            cells.append(f"{p[key]:.3f}" if key in p else "-")
        table.add_row(label, *cells)
    return table


def _import_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Import cost of harness.pytest_plugin (-X importtime, median run)")
    for column in (
        "backend",
        "bytecode",
        "alone",
        "after pytest",
        "harness own (self)",
        "wall: pass / pytest / plugin / matplotlib.figure",
        "heaviest packages (after pytest)",
    ):
        table.add_column(column, justify="right")
    for r in results:
        for mode in MODES:
            m = r.get(mode)
            if not m:
                continue
            imp = m["import"]
            walls = imp["wall_s"]
            heavy = ", ".join(
                f"{k} {v:.0f}" for k, v in list(imp["after_pytest"]["top_packages_ms"].items())[:5]
            )
            table.add_row(
                r["backend"],
                MODE_LABEL[mode],
                f"{imp['standalone']['harness_cumulative_ms']:.0f} ms",
                f"{imp['after_pytest']['harness_cumulative_ms']:.0f} ms",
                f"{imp['after_pytest']['harness_own_self_ms']:.0f} ms",
                " / ".join(fmt_s(w) for w in walls.values()),
                heavy + " (ms)",
            )
    return table


def _sweep_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="The harness_run fixture's parts in a fresh interpreter (medians)")
    rows = [
        (r["backend"], mode, r[mode]["import"]["sweep_probe_s"])
        for r in results
        for mode in MODES
        if r.get(mode)
    ]
    keys: list[str] = []
    for _, _, probe in rows:
        keys += [k for k in probe if k not in keys]
    table.add_column("backend")
    table.add_column("bytecode")
    for key in keys:
        table.add_column(key, justify="right")
    for backend, mode, probe in rows:
        table.add_row(backend, MODE_LABEL[mode], *(fmt_s(probe.get(k), 3) for k in keys))
    return table


def _plugins_table(result: dict[str, Any]) -> Table:
    table = Table(title="The pytest floor (one empty test, no harness) and the plugins beside it")
    table.add_column("plugins")
    for mode in MODES:
        table.add_column(f"{MODE_LABEL[mode]}: median (min)", justify="right")
        table.add_column("saving", justify="right")
    for name in result["configs"]:
        cells = []
        for mode in MODES:
            s = result[mode][name]
            cells += [f"{fmt_s(s['median'])} ({fmt_s(s['min'])})", fmt_s(s["saving_s"])]
        table.add_row(name, *cells)
    return table


def _targets_table(checks: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets")
    table.add_column("target")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    for check in checks:
        table.add_row(check["target"], fmt_s(check["value"], 3), verdict(check["met"]))
    return table


if __name__ == "__main__":
    main()
