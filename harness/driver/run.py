"""A run of the harness (a pytest session or a `harness up`): its id, state directory and the
sweep that removes whatever earlier runs left behind.

Every process a backend starts carries the environment variables of `Run.process_tags()`
(`HARNESS_RUN_ID`, `HARNESS_TESTNET_ID`, `HARNESS_NODE_ID`, `HARNESS_STATE_ROOT`; node programs
inherit them from their orchestrator), and every run writes `<state-root>/runs/<run id>/owner.json`
with the pid, start time and purpose of the process that owns it.
A sweep asks every backend to remove what it made for runs whose owner is gone (or for every
run, with `everything=True`), then removes their state, so a crashed or killed run never leaves
nodes behind past the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.driver.state import state_root

log = logging.getLogger(__name__)

RUN_ID_ENV = "HARNESS_RUN_ID"
TESTNET_ID_ENV = "HARNESS_TESTNET_ID"
NODE_ID_ENV = "HARNESS_NODE_ID"
STATE_ROOT_ENV = "HARNESS_STATE_ROOT"
KEEP_FILE = "keep"
BACKENDS_DIR = "backends"
"""In a run's directory: a file named after every backend the run used (`Run.uses`), so that a
sweep asks only those: loading the docker and swarm backends costs a local run ~0.3 s."""
ALWAYS_SWEPT = ("local",)
"""Backends every sweep asks: the local backend's sweep is one scan of this machine's processes,
and it also finds the processes of runs whose state directory is gone."""
HOLD_FILE = "holder.json"
"""In a testnet's directory: the live session attached to it (`harness.driver.holds`)."""


@dataclass(frozen=True)
class Run:
    """One run: its id and directory."""

    run_id: str
    directory: Path

    @classmethod
    def create(cls, purpose: str = "") -> Run:
        """A new run owned by this process; `purpose` (`pytest`, `harness up`, ...) is what
        `harness ls` shows as its owner."""
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        runs = state_root() / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        # Built under a hidden name and renamed: a concurrent sweep (another xdist worker) never
        # sees a run directory without its owner.
        building = Path(tempfile.mkdtemp(prefix=".new-", dir=runs))
        me = psutil.Process()
        owner = {"pid": me.pid, "create_time": me.create_time(), "purpose": purpose}
        (building / "owner.json").write_text(json.dumps(owner))
        directory = runs / run_id
        building.rename(directory)
        return cls(run_id, directory)

    def run_tags(self) -> dict[str, str]:
        """Environment variables that mark a process as this run's (what the sweep goes by)."""
        return {RUN_ID_ENV: self.run_id, STATE_ROOT_ENV: str(self.directory.parent.parent)}

    def process_tags(self, testnet_id: str, node_id: str) -> dict[str, str]:
        """Environment variables that mark a node's processes as this run's."""
        return {**self.run_tags(), TESTNET_ID_ENV: testnet_id, NODE_ID_ENV: node_id}

    def uses(self, backend: str) -> None:
        """Record that the run uses `backend` (before the backend makes anything), so that the
        sweep that removes the run asks that backend (`sweep`)."""
        with contextlib.suppress(FileNotFoundError):  # a run removed meanwhile: nothing to do
            (self.directory / BACKENDS_DIR).mkdir(exist_ok=True)
            (self.directory / BACKENDS_DIR / backend).touch()

    def keep(self, reason: str) -> None:
        """Leave the run's testnets up after it ends: only `harness down` removes them."""
        (self.directory / KEEP_FILE).write_text(reason + "\n")

    def close(self) -> None:
        """Remove what is left of this run: its processes and its state directory."""
        sweep(only_run=self.run_id)


def docker_engine_configured() -> bool:
    """Whether a Docker engine may be there to sweep (cheap: no import, no connection)."""
    return bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()


def _protected(run_dir: Path) -> bool:
    """A run that only `harness down --all` may remove: alive, kept by --keep-testnet, or with
    a testnet that a live session is attached to (`harness.driver.holds`)."""
    if is_kept(run_dir) or owner_of(run_dir) is not None:
        return True
    return run_dir.is_dir() and any(
        live_owner(hold) is not None for hold in run_dir.glob(f"*/{HOLD_FILE}")
    )


def is_kept(run_dir: Path) -> bool:
    """Whether the run's testnets were kept up past its end (`--keep-testnet`)."""
    return (run_dir / KEEP_FILE).exists()


@dataclass(frozen=True)
class Owner:
    """The live process that owns a run."""

    pid: int
    purpose: str


def owner_of(run_dir: Path) -> Owner | None:
    """The run's owner if it is still alive (the same process: pid and start time), else None."""
    return live_owner(run_dir / "owner.json")


def live_owner(path: Path) -> Owner | None:
    """The process a file names (JSON: pid, create_time, purpose) if it is still alive (the same
    process: pid and start time), else None."""
    try:
        owner = json.loads(path.read_text())
        process = psutil.Process(int(owner["pid"]))
        if abs(process.create_time() - float(owner["create_time"])) >= 0.01:
            return None
        return Owner(process.pid, str(owner.get("purpose", "")))
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def tagged_processes() -> dict[str, list[psutil.Process]]:
    """Every live process started by a run of this state root, by run id. (Runs of another
    state root, e.g. a test's own, are theirs to sweep.)"""
    found: dict[str, list[psutil.Process]] = {}
    me = os.getpid()
    root = str(state_root())
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            env = process.environ()
        except (psutil.Error, OSError):
            continue
        run_id = env.get(RUN_ID_ENV)
        if run_id and env.get(STATE_ROOT_ENV) == root:
            found.setdefault(run_id, []).append(process)
    return found


def kill_processes(processes: list[psutil.Process], grace: float = 3.0) -> int:
    """SIGTERM each process's group, SIGKILL what is left after `grace`; return how many."""
    groups: set[int] = set()
    for process in processes:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(process.pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error, ProcessLookupError, OSError):
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(processes)


def sweep(
    everything: bool = False, only_run: str | None = None, every_backend: bool = False
) -> dict[str, int]:
    """Remove what dead runs left (or every run's, or one run's): each backend's leftovers, the
    runs' state and their claims. Returns how many things were removed per run id.

    The backends asked are those the doomed runs used (`Run.uses`) and `ALWAYS_SWEPT`; every
    backend with `everything` or `every_backend` (`harness down`), which also finds what runs
    whose state directory is gone left in a docker engine."""
    from harness.driver.backend_registry import backend_names, get_backend
    from harness.driver.claims import release_stale_claims

    runs_dir = state_root() / "runs"

    def doomed(run_id: str) -> bool:
        if only_run is not None:
            return run_id == only_run
        return everything or not _protected(runs_dir / run_id)

    if everything or every_backend:
        names = backend_names()
    else:
        used = {
            marker.name
            for marker in runs_dir.glob(f"*/{BACKENDS_DIR}/*")
            if doomed(marker.parent.parent.name)
        }
        names = sorted((used | set(ALWAYS_SWEPT)) & set(backend_names()))
    removed: dict[str, int] = {}
    for backend in map(get_backend, names):
        for run_id, count in backend.sweep(doomed).items():
            removed[run_id] = removed.get(run_id, 0) + count
    if runs_dir.is_dir():
        for run_dir in runs_dir.iterdir():
            if not run_dir.name.startswith(".") and doomed(run_dir.name):  # .new-*: being made
                shutil.rmtree(run_dir, ignore_errors=True)
    release_stale_claims(everything=everything, only_run=only_run)
    return removed
