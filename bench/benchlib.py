"""Helpers shared by the benchmarks: the machine's description, percentiles, child processes
that are always stopped (also on Ctrl-C or SIGTERM), bounded waits, free loopback addresses,
and the output (one JSON document on stdout, rich tables on stderr).

Not a benchmark itself; `spinup.py`, `gateway.py`, `reaction.py` and `suite.py` import it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
# The harness's testnets use 127.1-99.*.*, its own tests 127.100-250.*.*: the benchmarks' own
# programs take addresses from 127.251-254.*.* so they never meet either.
_BENCH_OCTETS = range(251, 255)

# Wide enough for the tables when stderr is a file or a pipe (rich assumes 80 columns then).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


class BenchError(RuntimeError):
    """A benchmark cannot go on; the message says why."""


def machine() -> dict[str, Any]:
    """What the figures were measured on, load included (the machine is shared)."""
    memory = psutil.virtual_memory()
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_total_mb": round(memory.total / 2**20),
        "memory_available_mb": round(memory.available / 2**20),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "harness_commit": _git("rev-parse", "--short", "HEAD"),
        "harness_changed_files": len(_git("status", "--porcelain", "--", "harness").splitlines()),
    }


def _git(*args: str) -> str:
    """Output of a read-only git command in the repository, "" when git cannot tell."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    """p50, p90, p99, max, min and mean of `values` (seconds), rounded to 0.1 ms."""

    def r(x: float) -> float:
        return round(x, 4)

    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values)),
        "min": r(min(values)),
        "mean": r(sum(values) / len(values)),
    }


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def free_loopback_ip(ports: Sequence[int], tries: int = 200) -> str:
    """A 127.251-254.x.y address on which every port of `ports` can be bound now."""
    rng = random.Random()
    for _ in range(tries):
        ip = f"127.{rng.choice(_BENCH_OCTETS)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind((ip, port))
        except OSError:
            continue
        return ip
    raise BenchError(f"no free loopback address in {tries} tries")


def stop_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so every `finally` and `with` cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Children:
    """Child processes, each the leader of its own process group; `close()` (or leaving the
    `with`) stops every group: SIGTERM, then SIGKILL after `grace` seconds."""

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in a new session (pinned with `taskset -c cpus` if given), its output
        appended to `log` (discarded without one)."""
        command = ["taskset", "-c", cpus, *argv] if cpus else list(argv)
        out = log.open("ab") if log else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if log and not isinstance(out, int):
                out.close()
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop one child's process group (SIGTERM, SIGKILL after the grace period)."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        # Whatever the leader left in its group (it exited, its children may not have).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in list(self.processes):
            self.stop(process)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """The driver warns about sweeps and leftovers through `logging`; keep them on stderr but
    short."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    yield


def fmt_s(seconds: float | None, digits: int = 2) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds:.{digits}f} s"


def fmt_ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "[dim]n/a[/dim]"
    return "[green]met[/green]" if ok else "[red]MISSED[/red]"


def emit(document: dict[str, Any], tables: Sequence[Table], json_out: Path | None) -> None:
    """Print the tables (stderr) and the one JSON document (stdout, and `json_out` if given)."""
    for table in tables:
        console.print(table)
    text = json.dumps(document, indent=2, sort_keys=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
