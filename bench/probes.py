"""Probes behind the benchmarks' figures: where a node program's start, stop and memory go, and
what a pre-imported fork would save. Not a target of its own; its findings go to RESULTS.md.

    .venv/bin/python bench/probes.py [--trials 10]

- imports: per program (orchestrator, replica, ic-gateway), the median wall time of a fresh
  interpreter importing it and exiting, its peak RSS (`ru_maxrss` of the child), and the
  modules with the largest cumulative import time (`python -X importtime`); a bare interpreter
  (`python -c pass`) as the floor.
- replica start: a replica as the orchestrator starts it (a new interpreter,
  `python -m harness.node.replica`) until its status says healthy, against a replica forked
  from a process that has already imported it (what a fork server in the orchestrator would
  do), both with the default 0.2 s warm-up; and each one's memory once healthy (RSS, PSS, and
  USS: the pages only it holds, i.e. what one more such process costs).
- replica stop: SIGTERM until the process exited, for the spawned replica (no connection open),
  and for forked ones with one kept-alive client connection open, with the servers of
  `harness.node.serve` as they are (woken by the stop, draining in 10 ms polls) and with
  uvicorn's own stop put back (`stock_stop_server()`: a 0.1 s exit tick, a fixed 0.1 s
  shutdown sleep and 0.1 s polls), patched into the child only.

Only loopback addresses (127.251-254.x.y); every process it starts is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from benchlib import (
    PYTHON,
    REPO,
    BenchError,
    Children,
    console,
    distribution,
    emit,
    fmt_s,
    free_loopback_ip,
    machine,
    median,
    stop_on_sigterm,
)
from rich.table import Table

from harness.node.status import decode_status

PROGRAMS = {
    "bare interpreter": "pass",
    "orchestrator": "import harness.node.orchestrator.__main__, "
    "harness.node.orchestrator.orchestrator",
    "replica": "import harness.node.replica.__main__",
    "ic-gateway": "import harness.node.gateway.__main__",
}
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)$")
HEALTH_TIMEOUT = 20.0
# Peak RSS of the interpreter itself (ru_maxrss would carry the forking parent's peak over).
PRINT_HWM = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def import_probe(code: str, trials: int) -> dict[str, Any]:
    walls: list[float] = []
    rss: list[int] = []
    for _ in range(trials):
        started = time.perf_counter()
        done = subprocess.run(
            [PYTHON, "-c", f"{code}\n{PRINT_HWM}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        walls.append(time.perf_counter() - started)
        rss.append(int(done.stdout.split()[-1]))
    result: dict[str, Any] = {
        "wall_s": round(median(walls), 3),
        "peak_rss_mb": round(median([r / 1024 for r in rss]), 1),
    }
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        match = IMPORTTIME.match(line)
        if match:
            depth = len(match.group(3)) // 2
            rows.append((match.group(4), int(match.group(2)) / 1e6, depth))
    # The heaviest imports near the top of the tree (depth <= 3), by cumulative time.
    heavy = sorted((r for r in rows if r[2] <= 3), key=lambda r: -r[1])[:10]
    result["heaviest_imports"] = [{"module": m, "cumulative_s": round(t, 4)} for m, t, _ in heavy]
    return result


def _await_healthy(http: httpx.Client, url: str, started: float) -> float:
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if decode_status(http.get(url).content).is_healthy:
                return time.perf_counter() - started
        if time.perf_counter() - started > HEALTH_TIMEOUT:
            raise BenchError(f"{url}: not healthy within {HEALTH_TIMEOUT:g} s")
        time.sleep(0.002)


def replica_argv(ip: str) -> list[str]:
    return [
        "--http-listen",
        f"{ip}:8080",
        "--metrics-listen",
        f"{ip}:9090",
        "--replica-version",
        "probe",
        "--log-level",
        "warning",
    ]


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (what only this process holds) of `pid`, in MB."""
    info = psutil.Process(pid).memory_full_info()
    return {k: round(getattr(info, k) / 2**20, 1) for k in ("rss", "pss", "uss")}


def spawned_replica(
    ip: str, children: Children, http: httpx.Client, memory: list[dict[str, float]]
) -> tuple[float, float]:
    """(spawn -> healthy, SIGTERM -> exited) of a replica in a new interpreter; its memory
    once healthy is appended to `memory`."""
    started = time.perf_counter()
    process = children.start([PYTHON, "-m", "harness.node.replica", *replica_argv(ip)], cwd=REPO)
    healthy = _await_healthy(http, f"http://{ip}:8080/api/v2/status", started)
    memory.append(memory_mb(process.pid))
    stopping = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=HEALTH_TIMEOUT)
    stopped = time.perf_counter() - stopping
    children.stop(process)
    return healthy, stopped


def stock_stop_server() -> type:
    """`harness.node.serve._Server` with uvicorn's own stop put back (the peer of our fast
    stop): `should_exit` looked at on a 0.1 s tick, a fixed 0.1 s sleep after asking the
    connections to close, then 0.1 s polls."""
    import uvicorn

    from harness.node import serve

    class StockStopServer(serve._Server):
        main_loop = uvicorn.Server.main_loop
        shutdown = uvicorn.Server.shutdown

    return StockStopServer


def forked_replica(
    ip: str,
    http: httpx.Client,
    stock_stop: bool = False,
    memory: list[dict[str, float]] | None = None,
) -> tuple[float, float]:
    """(fork -> healthy, SIGTERM -> exited) of a replica forked from this process, which has
    imported it; with `stock_stop`, its servers are `stock_stop_server()`'s. Its memory once
    healthy is appended to `memory`."""
    from harness.node import serve
    from harness.node.replica.__main__ import main as replica_main

    server_class = stock_stop_server() if stock_stop else serve._Server
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: serve, then leave without running the parent's cleanup
        code = 1
        try:
            os.setsid()
            serve._Server = server_class  # type: ignore[misc,assignment]
            code = replica_main(replica_argv(ip))
        finally:
            os._exit(code)
    stopped = float("nan")
    try:
        healthy = _await_healthy(http, f"http://{ip}:8080/api/v2/status", started)
        if memory is not None:
            memory.append(memory_mb(pid))
        http.get(f"http://{ip}:8080/api/v2/status")  # leave a kept-alive connection open
    finally:
        stopping = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                stopped = time.perf_counter() - stopping
                break
            time.sleep(0.002)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return healthy, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if not 1 <= args.trials <= 100:
        parser.error("--trials must be 1-100")
    stop_on_sigterm()
    before = machine()
    imports = {}
    for name, code in PROGRAMS.items():
        console.log(f"imports: {name}")
        imports[name] = import_probe(code, min(args.trials, 5))
    spawn: list[float] = []
    stop: list[float] = []
    fork: list[float] = []
    fork_stop: list[float] = []
    stock_stop: list[float] = []
    spawned_memory: list[dict[str, float]] = []
    forked_memory: list[dict[str, float]] = []
    with Children() as children:
        for index in range(args.trials):
            # A new client per replica: the forked stops are measured with one kept-alive
            # connection open (as the gateway's), the spawned one with none.
            with httpx.Client(trust_env=False, timeout=0.5) as http:
                healthy, stopped = spawned_replica(
                    free_loopback_ip([8080, 9090]), children, http, spawned_memory
                )
            spawn.append(healthy)
            stop.append(stopped)
            with httpx.Client(trust_env=False, timeout=0.5) as http:
                forked, forked_stop = forked_replica(
                    free_loopback_ip([8080, 9090]), http, memory=forked_memory
                )
            fork.append(forked)
            fork_stop.append(forked_stop)
            with httpx.Client(trust_env=False, timeout=0.5) as http:
                _, patched_stop = forked_replica(free_loopback_ip([8080, 9090]), http, True)
            stock_stop.append(patched_stop)
            console.log(
                f"replica {index + 1}/{args.trials}: spawn->healthy {healthy * 1000:.0f} ms, "
                f"fork->healthy {forked * 1000:.0f} ms; SIGTERM->exit: spawned "
                f"{stopped * 1000:.0f} ms, forked {forked_stop * 1000:.0f} ms, forked with "
                f"uvicorn's own stop {patched_stop * 1000:.0f} ms"
            )
    document = {
        "benchmark": "probes",
        "machine_before": before,
        "machine_after": machine(),
        "imports": imports,
        "replica": {
            "spawn_to_healthy": distribution(spawn),
            "fork_to_healthy": distribution(fork),
            "sigterm_to_exit": distribution(stop),
            "forked_sigterm_to_exit": distribution(fork_stop),
            "forked_sigterm_to_exit_uvicorn_stock_stop": distribution(stock_stop),
            "warmup_s": 0.2,
            "memory_mb_spawned": _median_memory(spawned_memory),
            "memory_mb_forked": _median_memory(forked_memory),
        },
        "max_rss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    emit(document, _tables(document), args.json_out)
    sys.stdout.flush()


def _median_memory(samples: list[dict[str, float]]) -> dict[str, float]:
    if not samples:
        return {}
    return {k: round(median([s[k] for s in samples]), 1) for k in samples[0]}


def _tables(document: dict[str, Any]) -> list[Table]:
    imports = Table(title="Program imports (fresh interpreter, medians)")
    for column in ("program", "wall", "peak RSS", "heaviest imports (cumulative)"):
        imports.add_column(column)
    for name, probe in document["imports"].items():
        heavy = ", ".join(
            f"{h['module']} {h['cumulative_s'] * 1000:.0f} ms"
            for h in probe["heaviest_imports"][:6]
        )
        imports.add_row(name, fmt_s(probe["wall_s"], 3), f"{probe['peak_rss_mb']:.1f} MB", heavy)
    replica = Table(title="Replica start and stop")
    for column in ("what", "n", "p50", "p90", "max"):
        replica.add_column(column, justify="right")
    for name, dist in document["replica"].items():
        if isinstance(dist, dict) and "n" in dist:
            replica.add_row(
                name,
                str(dist["n"]),
                fmt_s(dist["p50"], 3),
                fmt_s(dist["p90"], 3),
                fmt_s(dist["max"], 3),
            )
    memory = Table(title="Replica memory once healthy (medians)")
    for column in ("how", "RSS", "PSS", "USS (its own)"):
        memory.add_column(column, justify="right")
    for how in ("spawned", "forked"):
        values = document["replica"][f"memory_mb_{how}"]
        if values:
            memory.add_row(how, f"{values['rss']} MB", f"{values['pss']} MB", f"{values['uss']} MB")
    return [imports, replica, memory]


if __name__ == "__main__":
    main()
