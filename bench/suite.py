"""Suite benchmark: wall time of the whole systests suite on each backend.

    .venv/bin/python bench/suite.py [--backends local,docker,swarm] [--workers 4] [--timeout 1800]

Runs, from the repository root, `pytest --run-manual -p no:cacheprovider -n 4 --dist loadfile
systests` (as scripts/test does; `--workers 0`: in one process, without xdist) with
`--backend local`, then `--backend docker`, then `--backend swarm` (through scripts/with-swarm,
which makes the engine a one-machine swarm for the run when it is in none), as `--backends`
lists them (artifacts in a temporary directory, removed afterwards), each in its own process
group, bounded by `--timeout`. Reports each run's wall
time, its outcome counts, the sum of the test times pytest reported (from a JUnit XML file) and
the slowest tests; the docker run is also given as a ratio to the local one, and both against
the floor of `pytest --collect-only` of the same suite (interpreter, plugin and collection), all
measured in the same run. The docker image is built first, untimed.

Prints one JSON document on stdout and tables on stderr. A run that outlives its timeout, or
Ctrl-C, stops its whole process group (the harness's own teardown then sweeps its testnets).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
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
    stop_on_sigterm,
)
from rich.table import Table

SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|error|errors|xfailed|xpassed|deselected)")


def pytest_argv(
    backend: str,
    artifacts: Path,
    junit: Path | None,
    collect_only: bool,
    keyword: str | None,
    workers: int = 0,
) -> list[str]:
    argv = [
        *([str(REPO / "scripts" / "with-swarm")] if backend == "swarm" else []),
        PYTHON,
        "-m",
        "pytest",
        "--run-manual",
        "-p",
        "no:cacheprovider",
        "--backend",
        backend,
        "--artifacts-dir",
        str(artifacts),
        "-q",
    ]
    if junit is not None:
        argv += ["--junitxml", str(junit)]
    if collect_only:
        argv.append("--collect-only")
    elif workers:
        argv += ["-n", str(workers), "--dist", "loadfile"]
    if keyword:
        argv += ["-k", keyword]
    return [*argv, "systests"]


def run_pytest(argv: list[str], log: Path, timeout: float) -> tuple[float, int, str]:
    """Run `argv` in its own process group; return (wall seconds, exit code, output tail)."""
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -1
            console.log(f"[red]timed out after {timeout:g} s: stopping it[/red]")
        finally:
            if process.poll() is None:
                # SIGINT first: pytest then tears its testnets down; SIGKILL if it hangs.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
    wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    return wall, code, text[-3000:]


def outcomes(output: str) -> dict[str, int]:
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    counts: dict[str, int] = {}
    for number, kind in SUMMARY.findall(last):
        counts["errors" if kind == "error" else kind] = int(number)
    return counts


def test_times(junit: Path) -> list[tuple[str, float]]:
    if not junit.exists():
        return []
    root = ET.parse(junit).getroot()
    times = [
        (f"{case.get('classname', '')}::{case.get('name', '')}", float(case.get("time", 0)))
        for case in root.iter("testcase")
    ]
    return sorted(times, key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument(
        "--workers", type=int, default=4, help="pytest-xdist workers (0: one process, no xdist)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run")
    parser.add_argument("-k", help="only the tests matching this pytest -k expression")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in ("local", "docker", "swarm") for b in backends):
        parser.error("--backends takes local, docker and/or swarm")
    stop_on_sigterm()
    before = machine()
    if "docker" in backends or "swarm" in backends:
        from harness.driver.backends.images import build_node_image

        console.log("building the node image (not timed)")
        build_node_image()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in backends:
            console.log(f"{backend}: pytest --collect-only (floor)")
            floor, code, tail = run_pytest(
                pytest_argv(backend, tmp / f"artifacts-{backend}-collect", None, True, args.k),
                tmp / f"collect-{backend}.log",
                min(args.timeout, 300),
            )
            if code != 0:
                raise BenchError(f"collecting the systests failed ({code}): {tail[-800:]}")
            collected = re.search(r"(\d+) tests? collected", tail)
            console.log(f"{backend}: the systests suite")
            junit = tmp / f"junit-{backend}.xml"
            wall, code, tail = run_pytest(
                pytest_argv(
                    backend, tmp / f"artifacts-{backend}", junit, False, args.k, args.workers
                ),
                tmp / f"suite-{backend}.log",
                args.timeout,
            )
            times = test_times(junit)
            counts = outcomes(tail)
            results.append(
                {
                    "backend": backend,
                    "command": ("scripts/with-swarm " if backend == "swarm" else "")
                    + ".venv/bin/python -m pytest --run-manual -p no:cacheprovider "
                    + (f"-n {args.workers} --dist loadfile " if args.workers else "")
                    + f"--backend {backend} systests"
                    + (f" -k {args.k!r}" if args.k else ""),
                    "wall_s": round(wall, 2),
                    "exit_code": code,
                    "outcomes": counts,
                    "collected": int(collected.group(1)) if collected else None,
                    "collect_only_s": round(floor, 2),
                    "sum_of_test_times_s": round(sum(t for _, t in times), 2),
                    "slowest": [{"test": n, "s": round(t, 2)} for n, t in times[:8]],
                    "output_tail": tail[-1500:] if code != 0 else tail[-300:],
                }
            )
            console.log(f"{backend}: {wall:.1f} s, exit {code}, {counts}")
    by_backend = {r["backend"]: r for r in results}
    ratios: dict[str, float] = {}
    if "local" in by_backend and "docker" in by_backend:
        ratios["docker_over_local"] = round(
            by_backend["docker"]["wall_s"] / by_backend["local"]["wall_s"], 2
        )
    for r in results:
        ratios[f"{r['backend']}_over_collect_only"] = round(r["wall_s"] / r["collect_only_s"], 1)
    document = {
        "benchmark": "suite",
        "machine_before": before,
        "machine_after": machine(),
        "results": results,
        "ratios": ratios,
    }
    emit(document, [_table(results, ratios), _slowest(results)], args.json_out)


def _table(results: list[dict[str, Any]], ratios: dict[str, float]) -> Table:
    table = Table(title=f"systests wall time  {ratios}")
    for column in ("backend", "wall", "exit", "outcomes", "sum of test times", "collect-only"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["backend"],
            fmt_s(r["wall_s"], 1),
            str(r["exit_code"]),
            ", ".join(f"{v} {k}" for k, v in r["outcomes"].items()),
            fmt_s(r["sum_of_test_times_s"], 1),
            fmt_s(r["collect_only_s"], 1),
        )
    return table


def _slowest(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Slowest tests")
    for column in ("backend", "test", "time"):
        table.add_column(column)
    for r in results:
        for item in r["slowest"][:5]:
            table.add_row(r["backend"], item["test"], fmt_s(item["s"], 1))
    return table


if __name__ == "__main__":
    main()
