"""Spin-up benchmark: time from start to "every node healthy" for testnets of N nodes, against
the floor of merely starting as many Python interpreters importing the node programs.

    .venv/bin/python bench/spinup.py [--local-sizes 5,13,40,100] [--docker-sizes 5,13]
                                     [--swarm-sizes 5,13]

A testnet of N nodes is a 1-node system subnet plus an (N-1)-node cloud-engine subnet with
ic-gateway, so "healthy" means every replica's status on 8080 and every cloud-engine node's
status through ic-gateway on port 80 (what `Testnet.start()` waits for). The time runs from
`Testnet(...)` to `start()` returning (addresses, registry, spawning, waiting).

Floors, measured right before each spin-up on the same cores (this process's CPU affinity,
which everything it starts inherits):

- process floor: as many interpreters as the testnet starts (N orchestrators, N replicas, N-1
  gateways), all at once, each importing its own program (`python -c 'import
  harness.node.replica.__main__'`, ...), until the last exits;
- node floor: N interpreters started at once, each importing all the programs of a
  cloud-engine node (`python -c 'import harness.node.orchestrator.orchestrator,
  harness.node.replica.__main__, harness.node.gateway.__main__'`).

The spin-up is reported against both; the target (< 1.5) is judged against each.

Memory: a sampler thread sums the RSS of each node's process tree (orchestrator and its
programs; on docker and swarm the container's tree from its init) every `--sample-interval`
seconds from the start until one second after healthy; the per-node peak is reported, and PSS
(RSS with shared pages divided among their users) once after healthy.

The swarm column runs when the docker engine is a swarm manager (`docker swarm init
--advertise-addr 127.0.0.1` makes it one); its nodes are reached through the swarm backend's
SOCKS proxy, as tests reach them. The docker and swarm backends' first use builds the node image
offline; it is built before any timing (`harness.driver.backends.images.build_node_image()`).
Prints one JSON document on stdout and a table on stderr. Every testnet is torn down, also on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
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

from harness.driver import (
    BackendOptions,
    HarnessError,
    InternetComputer,
    Run,
    Subnet,
    SubnetType,
    Testnet,
)

Progress = Callable[[str, int, int], None]

NODE_IMPORTS = (
    "harness.node.orchestrator.orchestrator",
    "harness.node.replica.__main__",
    "harness.node.gateway.__main__",
)
PROGRAM_IMPORTS = {
    "orchestrator": "harness.node.orchestrator.__main__, harness.node.orchestrator.orchestrator",
    "replica": "harness.node.replica.__main__",
    "ic-gateway": "harness.node.gateway.__main__",
}
TARGET_LOCAL_5 = 2.0
TARGET_DOCKER_5 = 5.0
TARGET_LOCAL_100 = 60.0
TARGET_RATIO = 1.5
TARGET_MB_PER_NODE = 60.0
FLOOR_TIMEOUT = 600.0
MB = 2**20


def topology(nodes: int) -> InternetComputer:
    return (
        InternetComputer()
        .with_name(f"spinup{nodes}")
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(nodes - 1).with_ic_gateway())
    )


def interpreters_floor(commands: list[str]) -> float:
    """Seconds from starting one interpreter per `-c` command, all at once, until the last
    exited; raise if one fails."""
    env = dict(os.environ)
    processes: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    try:
        for command in commands:
            processes.append(
                subprocess.Popen(
                    [PYTHON, "-c", command],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=REPO,
                )
            )
        deadline = started + FLOOR_TIMEOUT
        for process in processes:
            _, err = process.communicate(timeout=max(1.0, deadline - time.perf_counter()))
            if process.returncode != 0:
                raise BenchError(f"floor interpreter failed: {err.decode()[-500:]}")
        return time.perf_counter() - started
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def node_floor(nodes: int) -> float:
    return interpreters_floor([f"import {', '.join(NODE_IMPORTS)}"] * nodes)


def process_floor(nodes: int) -> float:
    commands = [f"import {PROGRAM_IMPORTS['orchestrator']}"] * nodes
    commands += [f"import {PROGRAM_IMPORTS['replica']}"] * nodes
    commands += [f"import {PROGRAM_IMPORTS['ic-gateway']}"] * (nodes - 1)
    return interpreters_floor(commands)


# ----------------------------------------------------------------------------- memory
@dataclass
class RssSampler:
    """Samples the summed RSS of each node's process tree in a thread."""

    roots: Callable[[], dict[str, int]]
    """node id -> the host pid at the top of the node's process tree (those known so far)."""
    interval: float
    peak: dict[str, int] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    cpu_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        began = time.thread_time()
        try:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.interval)
        except Exception as exc:  # a sampler failure must not end the benchmark
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.cpu_seconds = time.thread_time() - began

    def sample(self) -> None:
        roots = self.roots()
        if not roots:
            return
        children: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for process in psutil.process_iter(["ppid", "memory_info"]):
            info = process.info
            if info["memory_info"] is None:
                continue
            rss[process.pid] = info["memory_info"].rss
            children.setdefault(info["ppid"], []).append(process.pid)
        for node_id, root in roots.items():
            tree = _tree(root, children)
            total = sum(rss.get(pid, 0) for pid in tree)
            if total > self.peak.get(node_id, 0):
                self.peak[node_id] = total
            self.processes[node_id] = max(self.processes.get(node_id, 0), len(tree))
        self.samples += 1


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    found = [root]
    index = 0
    while index < len(found):
        found += children.get(found[index], [])
        index += 1
    return found


def program_of(process: psutil.Process) -> str:
    """Which node program a process of a node's tree is, from its command line."""
    try:
        words = " ".join(process.cmdline())
    except psutil.Error:
        return "gone"
    for needle, name in (
        ("orchestrator", "orchestrator"),
        ("ic-gateway", "ic-gateway"),
        ("harness.node.gateway", "ic-gateway"),
        ("ic-boundary", "ic-boundary"),
        ("replica", "replica"),
        ("tini", "tini"),
    ):
        if needle in words:
            return name
    return "other"


def memory_now(roots: dict[str, int]) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    """PSS of each node's process tree (bytes), and RSS/PSS per program averaged over the
    nodes that run it (MB)."""
    per_node: dict[str, int] = {}
    programs: dict[str, dict[str, list[float]]] = {}
    for node_id, root in roots.items():
        try:
            top = psutil.Process(root)
            tree = [top, *top.children(recursive=True)]
        except psutil.Error:
            continue
        total = 0
        for process in tree:
            with contextlib.suppress(psutil.Error):
                info = process.memory_full_info()
                total += info.pss
                seen = programs.setdefault(program_of(process), {"rss": [], "pss": []})
                seen["rss"].append(info.rss / MB)
                seen["pss"].append(info.pss / MB)
        per_node[node_id] = total
    by_program = {
        name: {
            "rss_mb": round(sum(v["rss"]) / len(v["rss"]), 1),
            "pss_mb": round(sum(v["pss"]) / len(v["pss"]), 1),
            "count": len(v["rss"]),
        }
        for name, v in sorted(programs.items())
    }
    return per_node, by_program


def local_roots(testnet: Testnet) -> Callable[[], dict[str, int]]:
    """The orchestrators' pids, from the pid files the local backend writes."""
    nodes_dir = testnet.directory / "nodes"
    node_ids = [n.node_id for n in testnet.plan.nodes]

    def roots() -> dict[str, int]:
        found: dict[str, int] = {}
        for node_id in node_ids:
            with contextlib.suppress(OSError, ValueError):
                found[node_id] = int((nodes_dir / node_id / "orchestrator.pid").read_text())
        return found

    return roots


def docker_roots(testnet: Testnet) -> Callable[[], dict[str, int]]:
    """The host pids of the nodes' containers' init processes (tini), once each container
    exists; on swarm the task containers (the registry service and access proxy are not
    nodes and not counted)."""
    import docker

    client = docker.from_env()
    found: dict[str, int] = {}
    label = f"org.harness.testnet-id={testnet.testnet_id}"
    total = len(testnet.plan.nodes)
    node_ids = {node.node_id for node in testnet.plan.nodes}

    def roots() -> dict[str, int]:
        if len(found) < total:
            for container in client.containers.list(filters={"label": label}):
                node_id = container.labels.get("org.harness.node-id")
                pid = (container.attrs.get("State") or {}).get("Pid") or 0
                if node_id in node_ids and pid:
                    found[node_id] = int(pid)
        return dict(found)

    return roots


# ----------------------------------------------------------------------------- one testnet
def spin_up(backend: str, nodes: int, run: Run, interval: float) -> dict[str, Any]:
    """Start a testnet of `nodes` nodes, time it until healthy, sample its memory, stop it."""
    options = BackendOptions()
    marks: dict[str, float] = {}
    spawned: list[float] = []
    started = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        now = time.perf_counter() - started
        if phase == "starting nodes":
            spawned.append(now)
        if done == total:
            marks[phase] = now

    testnet = Testnet(topology(nodes), run, backend, options)
    roots = local_roots(testnet) if backend == "local" else docker_roots(testnet)  # swarm too
    sampler = RssSampler(roots, interval)
    result: dict[str, Any] = {"backend": backend, "nodes": nodes}
    timeout = 30.0 + 3.0 * nodes
    try:
        sampler.start()
        try:
            testnet.start(timeout=timeout, progress=progress)
        except HarnessError as exc:
            result["error"] = str(exc).splitlines()[0][:300]
            return result
        healthy = time.perf_counter() - started
        # Independent check, untimed: every cloud-engine node answers healthy through port 80.
        snapshot = testnet.topology_snapshot()
        gateways = [n for n in snapshot.subnets[1].nodes]
        for node in gateways:
            if not node.status(port=80).is_healthy:
                raise BenchError(f"{node.node_id} is not healthy through ic-gateway")
        time.sleep(1.0)  # keep sampling a little past healthy
        sampler.stop()
        pss, by_program = memory_now(roots())
        # Gaps between successive backend.start_node() calls returning (Testnet.start runs
        # `backend.parallel_starts` of them at once; the docker backend's waits for its node).
        each = [b - a for a, b in zip([0.0, *spawned], spawned, strict=False)]
        result.update(
            {
                "healthy_s": round(healthy, 3),
                "all_spawned_s": round(marks.get("starting nodes", float("nan")), 3),
                "peak_rss_mb_per_node": _mb_stats(sampler.peak),
                "pss_mb_per_node": _mb_stats(pss),
                "memory_by_program_mb": by_program,
                "start_node_call_s": {
                    "median": round(median(each), 3) if each else None,
                    "max": round(max(each), 3) if each else None,
                },
                "processes_per_node_max": max(sampler.processes.values(), default=0),
                "rss_samples": sampler.samples,
                "sampler_cpu_s": round(sampler.cpu_seconds, 3),
                "sampler_error": sampler.error,
            }
        )
    finally:
        sampler.stop()
        closing = time.perf_counter()
        testnet.close()
        result["teardown_s"] = round(time.perf_counter() - closing, 3)
    return result


def _mb_stats(values: dict[str, int]) -> dict[str, float]:
    if not values:
        return {}
    mbs = [v / MB for v in values.values()]
    return {
        "max": round(max(mbs), 1),
        "mean": round(sum(mbs) / len(mbs), 1),
        "min": round(min(mbs), 1),
        "nodes_sampled": len(mbs),
    }


def measure(backend: str, nodes: int, repeat: int, run: Run, interval: float) -> dict[str, Any]:
    """Floors and spin-ups, interleaved, `repeat` times; medians of each."""
    trials: list[dict[str, Any]] = []
    for index in range(repeat):
        console_note(f"{backend} {nodes} nodes, trial {index + 1}/{repeat}: floors")
        floor = node_floor(nodes)
        floor_processes = process_floor(nodes)
        console_note(f"{backend} {nodes} nodes, trial {index + 1}/{repeat}: spin-up")
        trial = spin_up(backend, nodes, run, interval)
        trial["node_floor_s"] = round(floor, 3)
        trial["process_floor_s"] = round(floor_processes, 3)
        trial["loadavg_1m"] = round(os.getloadavg()[0], 2)
        trials.append(trial)
        if "error" in trial:
            break
    good = [t for t in trials if "error" not in t]
    summary: dict[str, Any] = {
        "backend": backend,
        "nodes": nodes,
        "trials": trials,
    }
    if good:
        healthy = median([t["healthy_s"] for t in good])
        floor = median([t["node_floor_s"] for t in good])
        floor_processes = median([t["process_floor_s"] for t in good])
        summary.update(
            {
                "healthy_s": round(healthy, 3),
                "node_floor_s": round(floor, 3),
                "process_floor_s": round(floor_processes, 3),
                "ratio_to_node_floor": round(healthy / floor, 2),
                "ratio_to_process_floor": round(healthy / floor_processes, 2),
                "peak_rss_mb_per_node_max": max(
                    t["peak_rss_mb_per_node"].get("max", 0) for t in good
                ),
                "pss_mb_per_node_max": max(t["pss_mb_per_node"].get("max", 0) for t in good),
            }
        )
    else:
        summary["error"] = trials[-1].get("error")
    return summary


def console_note(text: str) -> None:
    console.log(text)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the figure it is judged on and whether it was met."""

    def find(backend: str, nodes: int) -> dict[str, Any] | None:
        for r in results:
            if r["backend"] == backend and r["nodes"] == nodes and "healthy_s" in r:
                return r
        return None

    checks: list[dict[str, Any]] = []
    for backend, nodes, limit in (
        ("local", 5, TARGET_LOCAL_5),
        ("docker", 5, TARGET_DOCKER_5),
        ("local", 100, TARGET_LOCAL_100),
    ):
        r = find(backend, nodes)
        if r is not None:
            checks.append(
                {
                    "target": f"{nodes} nodes healthy on {backend} < {limit:g} s",
                    "value": r["healthy_s"],
                    "met": r["healthy_s"] < limit,
                }
            )
    for r in results:
        if "healthy_s" not in r:
            continue
        for floor in ("process", "node"):
            ratio = r[f"ratio_to_{floor}_floor"]
            checks.append(
                {
                    "target": f"{r['backend']} {r['nodes']}: spin-up / {floor} floor < "
                    f"{TARGET_RATIO}",
                    "value": ratio,
                    "met": ratio < TARGET_RATIO,
                }
            )
        checks.append(
            {
                "target": f"{r['backend']} {r['nodes']}: peak RSS per node < "
                f"{TARGET_MB_PER_NODE:g} MB",
                "value": r["peak_rss_mb_per_node_max"],
                "met": r["peak_rss_mb_per_node_max"] < TARGET_MB_PER_NODE,
            }
        )
    return checks


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if any(size < 2 or size > 250 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be between 2 and 250 nodes")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-sizes", type=_sizes, default=[5, 13, 40, 100])
    parser.add_argument("--docker-sizes", type=_sizes, default=[5, 13])
    parser.add_argument(
        "--swarm-sizes",
        type=_sizes,
        default=[5, 13],
        help="needs the docker engine to be a swarm manager (skipped, saying so, otherwise)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="trials per size up to 13 nodes (larger sizes run once); medians are reported",
    )
    parser.add_argument("--sample-interval", type=float, default=0.5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    before = machine()
    image: str | None = None
    if args.swarm_sizes:
        from harness.driver.backends.engine import engine
        from harness.driver.backends.swarm import swarm_node_id
        from harness.driver.errors import BackendUnavailable

        try:
            swarm_node_id(engine())
        except BackendUnavailable as exc:
            console_note(f"no swarm column: {exc}")
            args.swarm_sizes = []
    if args.docker_sizes or args.swarm_sizes:
        from harness.driver.backends.images import build_node_image

        console_note("building the node image (not timed)")
        image = build_node_image()
    run = Run.create()
    results: list[dict[str, Any]] = []
    try:
        plan = [("local", n) for n in args.local_sizes]
        plan += [("docker", n) for n in args.docker_sizes]
        plan += [("swarm", n) for n in args.swarm_sizes]
        for backend, nodes in plan:
            repeat = max(1, args.repeat) if nodes <= 13 else 1
            results.append(measure(backend, nodes, repeat, run, args.sample_interval))
    finally:
        run.close()
    checks = targets(results)
    document = {
        "benchmark": "spinup",
        "machine_before": before,
        "machine_after": machine(),
        "docker_image": image,
        "results": results,
        "targets": checks,
    }
    emit(document, [_table(results), _targets_table(checks)], args.json_out)


def _table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Spin-up to every node healthy (medians)")
    for column in (
        "backend",
        "nodes",
        "healthy",
        "node floor",
        "ratio",
        "process floor",
        "ratio",
        "peak RSS/node",
        "PSS/node",
    ):
        table.add_column(column, justify="right")
    for r in results:
        if "healthy_s" not in r:
            table.add_row(r["backend"], str(r["nodes"]), f"[red]{r.get('error')}[/red]")
            continue
        table.add_row(
            r["backend"],
            str(r["nodes"]),
            fmt_s(r["healthy_s"]),
            fmt_s(r["node_floor_s"]),
            f"{r['ratio_to_node_floor']:.2f}",
            fmt_s(r["process_floor_s"]),
            f"{r['ratio_to_process_floor']:.2f}",
            f"{r['peak_rss_mb_per_node_max']:.0f} MB",
            f"{r['pss_mb_per_node_max']:.0f} MB",
        )
    return table


def _targets_table(checks: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets")
    table.add_column("target")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    for check in checks:
        table.add_row(check["target"], str(check["value"]), verdict(check["met"]))
    return table


if __name__ == "__main__":
    main()
