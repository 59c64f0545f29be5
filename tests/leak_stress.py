"""Leak stress: bring a testnet up, kill the run at a random point, start the next run, and
count what is left behind at the end. The number must be 0.

    .venv/bin/python tests/leak_stress.py [--cycles 30] [--seed N] [--backend local|docker]
                                          [--max-delay S] [--json] [--keep-workdir]

Each cycle picks, from a seeded random generator:

- a run: `harness up --timeout 60 --topology <tmp>/topology.py` (a 1-node system subnet, a
  1-node cloud-engine subnet with ic-gateway, one API boundary node) or a pytest run of a tiny
  systest file written to the same temp dir (`define_testnet` with that topology);
- whether the testnet has a Prometheus beside it (`--prometheus`, half the cycles, when it can:
  on local, Debian's `prometheus` on PATH; on docker, its image is built before any cycle);
- a signal: SIGINT (to the run's process group, as a terminal's Ctrl-C), SIGTERM or SIGKILL
  (to the run's process only);
- a delay from the run's start (0 to `--max-delay` s, default 8 on local and 22 on docker: the
  small testnet is healthy after ~4.5 s on local and ~16.5 s on docker on a loaded 2-core
  machine), so kills land before the run exists (import, start-of-run sweep), while nodes
  start, while the testnet is up and, for pytest, after the test (metric checks, teardown).
  The phase each kill hit is reported, with the node processes and containers alive then.

Every run is started in its own session and gets `HARNESS_STATE_DIR=<tmp>/state` (as does this
process), so the harness's sweeps only ever see this stress's runs, never other runs on the
machine. Nothing here cleans up between cycles: the next run's own start-of-run sweep is the
mechanism under test. After each run has exited, the cycle records what that run left (for the
next run to sweep) and, when the run got as far as creating its run directory (so its
start-of-run sweep had finished), what earlier runs left that this sweep missed.

After the last cycle, one final clean run (`harness down`, without `--all`: dead runs only), a
short pause, then the count of leftovers of the whole stress:

- processes whose environment has `HARNESS_STATE_ROOT` (node programs) or `HARNESS_STATE_DIR`
  (runs and anything they started) equal to the state root (zombies, dead and merely unreaped
  by PID 1, are listed apart);
- docker containers and networks labelled `org.harness.state-root=<root>` (when an engine runs);
- iptables rules in INPUT/OUTPUT with a `harness:<run id>` comment of one of this stress's runs
  (when root);
- run directories under `<state>/runs` (hidden `.new-*` ones included), claim files under
  `<state>/claims`, and whatever the runs left in their private temp dir (`TMPDIR=<tmp>/tmp`,
  so image builds and the like are counted without mistaking other sessions' temp files for
  ours; pytest's own retained `pytest-of-*` is not counted).

Bounds: every cycle ends within 90 s; a run that has not exited 30 s after its signal is
reported as stuck and gets SIGABRT (runs have PYTHONFAULTHANDLER=1, so its log, and the report,
say where it hung), then SIGKILL to its whole process group; `harness down` gets 120 s, then the
same treatment. Whatever happens (an error,
Ctrl-C, SIGTERM), the leftovers are counted first and then removed with `harness down --all`
on the stress's state root, and the temp dir goes (unless `--keep-workdir`).

Output: per-cycle and summary tables (rich) on stdout, or one JSON document with `--json`;
progress lines on stderr. Exit status 0 when nothing was left at the end, no run was stuck and
no run's sweep missed anything; 1 otherwise (130 when interrupted, 2 on a usage error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable

# The harness's tags (harness/driver/run.py, harness/driver/backends/docker.py and
# local_firewall.py); spelled out here so counting never imports the docker backend.
RUN_ID_ENV = "HARNESS_RUN_ID"
NODE_ID_ENV = "HARNESS_NODE_ID"
STATE_ROOT_ENV = "HARNESS_STATE_ROOT"
STATE_DIR_ENV = "HARNESS_STATE_DIR"
RUN_LABEL = "org.harness.run-id"
STATE_ROOT_LABEL = "org.harness.state-root"
RULE_TAG = "harness:"
MARKERS_ENV = "LEAK_STRESS_MARKERS"

SIGNALS: dict[str, signal.Signals] = {
    "SIGINT": signal.SIGINT,
    "SIGTERM": signal.SIGTERM,
    "SIGKILL": signal.SIGKILL,
}
MODES = ("up", "pytest")
CYCLE_LIMIT = 90.0  # seconds per cycle, everything included
EXIT_GRACE = 30.0  # seconds a run may take to exit after its signal
SETTLE = 0.5  # seconds between a run's exit and counting what it left
FINAL_SETTLE = 2.0
COMMAND_TIMEOUT = 120.0  # `harness down`: a sweep on a heavily loaded machine can take long
# A small testnet is healthy after ~4.5 s on local and ~16.5 s on docker (loaded 2-core
# machine), and torn down in ~1.5 s / ~4 s: the default delays reach past both.
MAX_DELAY = {"local": 8.0, "docker": 22.0}
# Exit codes that are no surprise after each signal (Python's default SIGINT handling ends in
# -2; pytest says 2 when interrupted; `harness up` catches SIGINT/SIGTERM and returns 0).
EXPECTED_CODES: dict[tuple[str, str], set[int]] = {
    ("up", "SIGINT"): {130, -2},  # 128 + the signal when handled, -signal when it came first
    ("up", "SIGTERM"): {143, -15},
    ("up", "SIGKILL"): {-9},
    ("pytest", "SIGINT"): {2, -2},
    ("pytest", "SIGTERM"): {-15},
    ("pytest", "SIGKILL"): {-9},
}

TOPOLOGY_SOURCE = '''\
"""The stress's small testnet: a 1-node system subnet, a 1-node cloud-engine subnet with
ic-gateway, one API boundary node."""

from harness.driver import InternetComputer, Subnet, SubnetType


def topology() -> InternetComputer:
    return (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway())
        .with_api_boundary_nodes(1)
    )
'''

SYSTEST_SOURCE = (
    TOPOLOGY_SOURCE
    + """

import os
import time
from pathlib import Path

import pytest

from harness.driver import Testnet
from harness.pytest_plugin import define_testnet

testnet = define_testnet(topology)


@pytest.mark.systest
def test_small_testnet_is_healthy(testnet: Testnet) -> None:
    markers = Path(os.environ["LEAK_STRESS_MARKERS"])
    (markers / "up").touch()
    for node in testnet.topology_snapshot().subnets[1].nodes:
        assert node.await_status_is_healthy(port=80).is_healthy
    time.sleep(0.5)
    (markers / "done").touch()
"""
)

stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


class StressError(RuntimeError):
    """The stress cannot go on; the message says why."""


# Counting leftovers.


@dataclass
class Leftovers:
    """What runs of the stress's state root left: one list of entries per kind, each entry a
    dict with at least `run` (the run id it belongs to, "" when unknown)."""

    processes: list[dict[str, Any]] = field(default_factory=list)
    containers: list[dict[str, Any]] = field(default_factory=list)
    networks: list[dict[str, Any]] = field(default_factory=list)
    iptables_rules: list[dict[str, Any]] = field(default_factory=list)
    run_dirs: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    temp_dirs: list[dict[str, Any]] = field(default_factory=list)
    zombies: list[dict[str, Any]] = field(default_factory=list)  # listed, not counted

    KINDS = (
        "processes",
        "containers",
        "networks",
        "iptables_rules",
        "run_dirs",
        "claims",
        "temp_dirs",
    )

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in self.KINDS}

    def total(self) -> int:
        return sum(self.counts().values())

    def select(self, keep: Callable[[dict[str, Any]], bool]) -> Leftovers:
        """The entries for which `keep(entry)` is true."""
        picked = Leftovers()
        for kind in (*self.KINDS, "zombies"):
            setattr(picked, kind, [entry for entry in getattr(self, kind) if keep(entry)])
        return picked

    def describe(self) -> str:
        parts = [f"{n} {kind}" for kind, n in self.counts().items() if n]
        return ", ".join(parts) or "nothing"


class Observer:
    """Counts the leftovers of one state root, and remembers every run id it has seen (an
    iptables rule names only its run, not its state root)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.root = str(state)
        self.known_runs: set[str] = set()
        self.seen: dict[int, tuple[float, str, str]] = {}  # pid: (create time, run, name)
        self.temp = state.parent / "tmp"  # the runs' TMPDIR
        self.temp_owner: dict[str, str] = {}  # temp entry: the run (or cycle) it appeared in
        self.current = ""  # the run (or cycle) whose leftovers are being looked at
        self.docker = self._docker_client()

    @staticmethod
    def _docker_client() -> Any:
        """A client of a running engine, or None (no engine: nothing to count there)."""
        if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
            return None
        try:
            import docker

            client = docker.from_env(timeout=15)
            client.ping()
            return client
        except Exception:
            return None

    def temp_entries(self) -> list[dict[str, Any]]:
        """What the runs left in their private TMPDIR (pytest's own retained basetemp
        directories, `pytest-of-*`, are pytest's business and not counted)."""
        found = []
        with contextlib.suppress(OSError):
            for entry in sorted(self.temp.iterdir()):
                if entry.name.startswith("pytest-of-"):
                    continue
                owner = self.temp_owner.setdefault(entry.name, self.current)
                found.append({"run": owner, "name": entry.name})
        return found

    def processes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Live processes of the state root, and the zombies among those seen alive before."""
        live: list[dict[str, Any]] = []
        zombies: list[dict[str, Any]] = []
        me = os.getpid()
        for process in psutil.process_iter():
            if process.pid == me:
                continue
            try:
                status = process.status()
                if status == psutil.STATUS_ZOMBIE:
                    # Dead, but not reaped by its parent (PID 1 for orphans, which here does
                    # not always reap): its environment is gone, so it is ours only if it was
                    # seen alive with our tags.
                    seen = self.seen.get(process.pid)
                    if seen is not None and abs(seen[0] - process.create_time()) < 0.01:
                        zombies.append({"run": seen[1], "pid": process.pid, "name": seen[2]})
                    continue
                env = process.environ()
            except (psutil.Error, OSError):
                continue
            if env.get(STATE_ROOT_ENV) != self.root and env.get(STATE_DIR_ENV) != self.root:
                continue
            run_id = env.get(RUN_ID_ENV, "")
            if run_id:
                self.known_runs.add(run_id)
            with contextlib.suppress(psutil.Error):
                name = process.name()
                entry = {
                    "run": run_id,
                    "pid": process.pid,
                    "name": name,
                    "role": "node" if env.get(STATE_ROOT_ENV) == self.root else "runner",
                    "node": env.get(NODE_ID_ENV, ""),
                    "status": status,
                    "cmdline": " ".join(process.cmdline())[:160],
                }
                self.seen[process.pid] = (process.create_time(), run_id, name)
                live.append(entry)
        return live, zombies

    def docker_objects(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Containers and networks labelled with the state root (low-level listings: no
        per-object inspect that a concurrent removal could break)."""
        if self.docker is None:
            return [], []
        label = {"label": f"{STATE_ROOT_LABEL}={self.root}"}
        containers = []
        for c in self.docker.api.containers(all=True, filters=label):
            run_id = (c.get("Labels") or {}).get(RUN_LABEL, "")
            self.known_runs.add(run_id)
            names = c.get("Names") or [c.get("Id", "")[:12]]
            containers.append(
                {"run": run_id, "name": names[0].lstrip("/"), "state": c.get("State")}
            )
        networks = []
        for n in self.docker.api.networks(filters=label):
            run_id = (n.get("Labels") or {}).get(RUN_LABEL, "")
            self.known_runs.add(run_id)
            networks.append({"run": run_id, "name": n.get("Name")})
        return containers, networks

    def iptables_rules(self) -> list[dict[str, Any]]:
        """Partition rules of this stress's runs (root only)."""
        binary = shutil.which("iptables")
        if os.geteuid() != 0 or binary is None:
            return []
        found = []
        for chain in ("INPUT", "OUTPUT"):
            try:
                listing = subprocess.run(
                    [binary, "-w", "-S", chain],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                continue
            for line in listing.stdout.splitlines():
                if RULE_TAG not in line or "--comment" not in line:
                    continue
                comment = line.split("--comment", 1)[1].split()[0].strip('"')
                if not comment.startswith(RULE_TAG):
                    continue
                run_id = comment[len(RULE_TAG) :].split(":", 1)[0]
                if run_id in self.known_runs:
                    found.append({"run": run_id, "rule": line})
        return found

    def files(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        runs: list[dict[str, Any]] = []
        claims: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            for entry in sorted((self.state / "runs").iterdir()):
                run_id = "" if entry.name.startswith(".") else entry.name
                self.known_runs.add(run_id)
                # What is in it tells an untouched run (owner.json there) from a half-removed one.
                inside = sorted(str(p.relative_to(entry)) for p in entry.rglob("*"))
                runs.append(
                    {"run": run_id, "name": entry.name, "entries": len(inside), "some": inside[:6]}
                )
        with contextlib.suppress(OSError):
            for entry in sorted((self.state / "claims").rglob("*")):
                if not entry.is_file():
                    continue
                try:
                    run_id = entry.read_text().split()[0]
                except (OSError, IndexError):
                    run_id = ""
                self.known_runs.add(run_id)
                claims.append({"run": run_id, "name": entry.name})
        return runs, claims

    def observe(self) -> Leftovers:
        found = Leftovers()
        found.run_dirs, found.claims = self.files()
        found.processes, found.zombies = self.processes()
        found.containers, found.networks = self.docker_objects()
        found.iptables_rules = self.iptables_rules()
        found.temp_dirs = self.temp_entries()
        self.known_runs.discard("")
        return found

    def owned_run(self, pid: int) -> str | None:
        """The run id whose owner.json names `pid`, if that run directory exists now."""
        with contextlib.suppress(OSError):
            for entry in (self.state / "runs").iterdir():
                if entry.name.startswith("."):
                    continue
                try:
                    owner = json.loads((entry / "owner.json").read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(owner, dict) and owner.get("pid") == pid:
                    self.known_runs.add(entry.name)
                    return entry.name
        return None

    def tagged_processes(self) -> list[dict[str, Any]]:
        """Node programs of the state root (what a sweep looks for), alive now."""
        return [p for p in self.processes()[0] if p["role"] == "node"]


# One cycle.


def hang_site(output: str) -> str:
    """The innermost frames of the main thread in a faulthandler dump, or say there is none."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Current thread")]
    if not starts:
        return "no faulthandler dump"
    frames = []
    for line in lines[starts[-1] + 1 :]:
        if not line.startswith("  File"):
            break
        frames.append(line.strip().replace(str(REPO) + "/", ""))
    return "main thread at: " + " <- ".join(frames[:4])


@dataclass
class Cycle:
    index: int
    mode: str
    signal: str
    delay: float
    prometheus: bool = False  # the run starts a Prometheus beside its testnet
    phase: str = ""  # what the run was doing when the signal went out
    run_id: str | None = None
    alive_total: int | None = None  # node processes of the state root just before the kill
    alive_run: int | None = None  # ... of which this run's
    alive_containers: int | None = None  # containers of the state root just before the kill
    exit_code: int | None = None
    stuck: bool = False  # did not exit within EXIT_GRACE of its signal
    left: dict[str, int] = field(default_factory=dict)  # this run's leftovers after its exit
    missed: dict[str, int] | None = None  # earlier runs' leftovers after this run's sweep
    missed_detail: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""


class Stress:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.state = workdir / "state"
        self.topology = workdir / "topology.py"
        self.systest = workdir / "systest" / "test_leak_stress_small.py"
        self.observer: Observer | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.cycles: list[Cycle] = []
        self.env = {
            **os.environ,
            STATE_DIR_ENV: str(self.state),
            "TMPDIR": str(workdir / "tmp"),  # whatever the runs leave in a temp dir is found
            "PYTHONFAULTHANDLER": "1",
        }
        self.env.pop("PYTEST_ADDOPTS", None)

    def prepare(self) -> None:
        self.state.mkdir(parents=True)
        (self.workdir / "tmp").mkdir()
        os.environ[STATE_DIR_ENV] = str(self.state)  # this process's harness calls, too
        self.topology.write_text(TOPOLOGY_SOURCE)
        self.systest.parent.mkdir()
        self.systest.write_text(SYSTEST_SOURCE)
        if self.args.backend == "docker":
            from harness.driver.backends.images import build_node_image

            stderr.print("building (or finding) the node image before any cycle")
            build_node_image(console=stderr)
            if self.args.prometheus:
                from harness.driver.backends.engine import engine
                from harness.driver.backends.images import build_prometheus_image

                stderr.print("building (or finding) the Prometheus image before any cycle")
                with contextlib.closing(engine()) as client:
                    build_prometheus_image(client, console=stderr)
        self.observer = Observer(self.state)
        if self.args.backend == "docker" and self.observer.docker is None:
            raise StressError("--backend docker: no Docker engine answers here")

    def argv(self, mode: str, prometheus: bool) -> list[str]:
        extra = ["--prometheus"] if prometheus else []
        if mode == "up":
            return [
                PYTHON, "-m", "harness.cli", "up",
                "--timeout", "60",
                "--topology", str(self.topology),
                "--backend", self.args.backend,
                *extra,
            ]  # fmt: skip
        return [
            PYTHON, "-m", "pytest", str(self.systest),
            "-q", "-p", "no:cacheprovider",
            "--backend", self.args.backend,
            "--artifacts-dir", str(self.workdir / "artifacts"),
            *extra,
        ]  # fmt: skip

    def harness(self, *args: str) -> dict[str, Any]:
        """Run `harness <args>` on the stress's state root, bounded in time."""
        argv = [PYTHON, "-m", "harness.cli", *args]
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        code: int | None
        try:
            output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
            code = process.returncode
        except subprocess.TimeoutExpired:
            # SIGABRT first: faulthandler (PYTHONFAULTHANDLER) prints where it hangs.
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGABRT)
            try:
                output, _ = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate(timeout=10)
            code = None
            output = f"did not finish within {COMMAND_TIMEOUT:.0f} s; {hang_site(output)}"
        output = output.strip()
        return {
            "command": "harness " + " ".join(args),
            "exit_code": code,
            "seconds": round(time.monotonic() - started, 2),
            "output": output[-2000:],
        }

    def phase(self, cycle: Cycle, markers: Path, log: Path) -> str:
        if cycle.run_id is None:
            return "pre-run"  # importing, or the start-of-run sweep
        if cycle.mode == "up":
            text = log.read_text(errors="replace") if log.exists() else ""
            return "up" if "every node is healthy" in text else "starting"
        if (markers / "done").exists():
            return "teardown"
        return "up" if (markers / "up").exists() else "starting"

    def run_cycle(self, cycle: Cycle) -> None:
        assert self.observer is not None
        observer = self.observer
        started = time.monotonic()
        deadline = started + CYCLE_LIMIT
        directory = self.workdir / f"cycle-{cycle.index:02d}"
        markers = directory / "markers"
        markers.mkdir(parents=True)
        log = directory / "run.log"
        env = {**self.env, MARKERS_ENV: str(markers)}
        with log.open("wb") as out:
            self.child = child = subprocess.Popen(
                self.argv(cycle.mode, cycle.prometheus),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        fire_at = started + cycle.delay
        while time.monotonic() < fire_at and child.poll() is None:
            if cycle.run_id is None:
                cycle.run_id = observer.owned_run(child.pid)
            time.sleep(min(0.05, max(0.0, fire_at - time.monotonic())))
        if child.poll() is None and cycle.run_id is None:
            cycle.run_id = observer.owned_run(child.pid)
        if child.poll() is not None:
            cycle.phase = "exited"
        else:
            cycle.phase = self.phase(cycle, markers, log)
            tagged = observer.tagged_processes()
            cycle.alive_total = len(tagged)
            cycle.alive_run = sum(1 for p in tagged if cycle.run_id and p["run"] == cycle.run_id)
            if observer.docker is not None:
                cycle.alive_containers = len(observer.docker_objects()[0])
            sig = SIGNALS[cycle.signal]
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGINT:
                    os.killpg(child.pid, sig)  # as a terminal's Ctrl-C: the foreground group
                else:
                    os.kill(child.pid, sig)
        try:
            child.wait(timeout=max(1.0, min(EXIT_GRACE, deadline - time.monotonic() - 20)))
        except subprocess.TimeoutExpired:
            cycle.stuck = True
            # SIGABRT first: faulthandler (PYTHONFAULTHANDLER) writes where it hangs to the log.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=3)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        self.child = None
        cycle.exit_code = child.returncode
        if cycle.run_id is None:
            cycle.run_id = observer.owned_run(child.pid)
        time.sleep(SETTLE)
        # New temp entries are this run's (or, before it had an id, this cycle's).
        observer.current = cycle.run_id or f"cycle-{cycle.index}"
        found = observer.observe()
        run_id = cycle.run_id
        owner = observer.current
        cycle.left = found.select(lambda e: e["run"] == owner).counts()
        if run_id is not None:
            # This run's start-of-run sweep finished (it runs before the run directory is
            # made), so nothing of an earlier run may be left.
            missed = found.select(lambda e: e["run"] != run_id)
            cycle.missed = missed.counts()
            for kind in Leftovers.KINDS:
                for entry in getattr(missed, kind):
                    what = entry.get("name") or entry.get("cmdline") or entry.get("rule")
                    cycle.missed_detail.append(f"{kind}: {what} (run {entry['run'] or '?'})")
        expected = {0} if cycle.phase == "exited" else EXPECTED_CODES[(cycle.mode, cycle.signal)]
        if cycle.stuck:
            cycle.note = f"stuck {EXIT_GRACE:.0f} s after {cycle.signal}; " + hang_site(
                log.read_text(errors="replace")
            )
        elif cycle.exit_code not in expected:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            cycle.note = " | ".join(lines[-3:])[-400:]
        cycle.seconds = round(time.monotonic() - started, 2)

    def kill_child(self) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
        self.child = None


# Reporting.


def cycles_table(cycles: list[Cycle]) -> Table:
    table = Table(title="leak stress: cycles")
    for column in (
        "#",
        "mode",
        "prom",
        "signal",
        "delay s",
        "phase",
        "procs (run)",
        "ctrs",
        "exit",
        "stuck",
        "left by run",
        "missed by sweep",
        "s",
    ):
        table.add_column(column, justify="right" if column in ("#", "delay s", "s") else "left")
    for c in cycles:
        alive = "-" if c.alive_total is None else f"{c.alive_total} ({c.alive_run})"
        left = ", ".join(f"{n} {k}" for k, n in c.left.items() if n) or "0"
        missed = "-" if c.missed is None else (sum(c.missed.values()) or "0")
        table.add_row(
            str(c.index),
            c.mode,
            "yes" if c.prometheus else "",
            c.signal,
            f"{c.delay:.2f}",
            c.phase,
            alive,
            "-" if c.alive_containers is None else str(c.alive_containers),
            str(c.exit_code),
            "STUCK" if c.stuck else "",
            left,
            str(missed),
            f"{c.seconds:.1f}",
        )
    return table


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"leak stress: leftovers at the end (state root {report['state_root']})")
    table.add_column("kind")
    table.add_column("left", justify="right")
    for kind, n in report["leftovers"].items():
        table.add_row(kind, str(n))
    table.add_row("[bold]total[/bold]", f"[bold]{report['leftover_total']}[/bold]")
    table.add_row("stuck runs", str(report["stuck"]))
    table.add_row("earlier runs' leftovers missed by a sweep", str(report["missed"]))
    table.add_row("zombies (unreaped, not counted)", str(report["zombies"]))
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Kill runs at random points and count what they leave behind."
    )
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, reported")
    parser.add_argument("--backend", choices=("local", "docker"), default="local")
    parser.add_argument(
        "--max-delay",
        type=float,
        default=None,
        help="longest delay before the kill (s); default 8 on local, 22 on docker",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and state")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if args.max_delay is None:
        args.max_delay = MAX_DELAY[args.backend]
    if not 0 <= args.max_delay <= 30:
        parser.error("--max-delay must be within 0..30 s")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    # A Prometheus beside half the testnets, where one can run.
    args.prometheus = args.backend == "docker" or shutil.which("prometheus") is not None
    if not args.prometheus:
        stderr.print("no prometheus on PATH: no cycle runs one (scripts/install-test-tools)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    plans = [
        Cycle(
            index=i + 1,
            mode=rng.choice(MODES),
            signal=rng.choice(tuple(SIGNALS)),
            delay=round(rng.uniform(0.0, args.max_delay), 2),
            prometheus=args.prometheus and rng.random() < 0.5,
        )
        for i in range(args.cycles)
    ]

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    # Started in the background of a shell, SIGINT is ignored, and the runs would inherit that:
    # they must get the default disposition, so that SIGINT means Ctrl-C to them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="leak-stress-"))
    stress = Stress(args, workdir)
    report: dict[str, Any] = {
        "seed": args.seed,
        "backend": args.backend,
        "cycles_planned": args.cycles,
        "max_delay": args.max_delay,
        "state_root": str(stress.state),
        "workdir": str(workdir),
    }
    interrupted = False
    error = ""
    final: Leftovers | None = None
    try:
        stress.prepare()
        for plan in plans:
            stress.run_cycle(plan)
            stress.cycles.append(plan)
            stderr.print(
                f"cycle {plan.index}/{args.cycles}: {plan.mode} {plan.signal} after "
                f"{plan.delay:.2f} s ({plan.phase}): exit {plan.exit_code}"
                f"{' STUCK' if plan.stuck else ''}, left {sum(plan.left.values())}, missed "
                f"{'-' if plan.missed is None else sum(plan.missed.values())}"
            )
        report["final_run"] = stress.harness("down")
        time.sleep(FINAL_SETTLE)
    except KeyboardInterrupt:
        interrupted = True
        stderr.print("interrupted: counting leftovers, then cleaning up")
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        stderr.print(f"[red]error:[/red] {error}")
    finally:
        stress.kill_child()
        if stress.observer is not None:
            with contextlib.suppress(Exception):
                final = stress.observer.observe()
        report["cleanup"] = stress.harness("down", "--all")
        if stress.observer is not None:
            with contextlib.suppress(Exception):
                report["after_cleanup"] = stress.observer.observe().counts()
        if stress.observer is not None and stress.observer.docker is not None:
            with contextlib.suppress(Exception):
                stress.observer.docker.close()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    cycles = stress.cycles
    report["cycles"] = [asdict(c) for c in cycles]
    report["cycles_run"] = len(cycles)
    report["by_phase"] = dict(Counter(c.phase for c in cycles))
    report["by_signal"] = dict(Counter(c.signal for c in cycles))
    report["by_mode"] = dict(Counter(c.mode for c in cycles))
    report["stuck"] = sum(c.stuck for c in cycles)
    report["missed"] = sum(sum(c.missed.values()) for c in cycles if c.missed)
    report["unexpected_exits"] = [
        {"cycle": c.index, "exit_code": c.exit_code, "note": c.note} for c in cycles if c.note
    ]
    if final is not None:
        report["leftovers"] = final.counts()
        report["leftover_total"] = final.total()
        report["leftover_details"] = {k: v for k, v in asdict(final).items() if v}
        report["zombies"] = len(final.zombies)
    else:
        report["leftovers"] = {}
        report["leftover_total"] = None
        report["zombies"] = 0
    report["interrupted"] = interrupted
    report["error"] = error
    report["ok"] = (
        not interrupted
        and not error
        and final is not None
        and final.total() == 0
        and report["stuck"] == 0
        and report["missed"] == 0
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out = Console(width=None if sys.stdout.isatty() else 160)
        out.print(cycles_table(cycles))
        if report["leftover_total"] is not None:
            out.print(summary_table(report))
        for c in cycles:
            for line in c.missed_detail:
                out.print(f"cycle {c.index} missed: {line}")
        for item in report["unexpected_exits"]:
            out.print(f"cycle {item['cycle']}: exit {item['exit_code']}: {item['note']}")
        for key in ("final_run", "cleanup"):
            command = report.get(key)
            if command and command["exit_code"] != 0:
                out.print(f"{key} `{command['command']}` exited {command['exit_code']}:")
                out.print(command["output"], markup=False, highlight=False)
        if final is not None and final.total():
            out.print_json(json.dumps(report["leftover_details"]))
        out.print(
            f"seed {args.seed}: "
            + ("[green]OK[/green]: nothing left" if report["ok"] else "[red]FAILED[/red]")
        )
    if interrupted:
        return 130
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
