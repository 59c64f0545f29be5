"""Spin-up benchmark: time from start to "every node healthy" for testnets of N nodes, and what
each node costs in memory (PSS), against floors measured in the same run.

    .venv/bin/python bench/spinup.py [--local-sizes default,13,100] [--docker-sizes default,13]
                                     [--swarm-sizes default,13] [--spawn fork|exec]

A size is a node count N (a 1-node system subnet plus an (N-1)-node cloud-engine subnet with
ic-gateway) or `default`: the testnet of `harness up` (a 1-node system subnet, a 4-node
cloud-engine subnet with ic-gateway, an API boundary node). "Healthy" is what `Testnet.start()`
waits for: every replica's status on 8080, every cloud-engine node's through ic-gateway on port
80, every API boundary node's through ic-boundary. The time runs from `Testnet(...)` to `start()`
returning (addresses, registry, spawning, waiting), on the local backend including the start of
the run's template (`--spawn fork`, the default: node programs forked from processes that have
imported them; `--spawn exec`: each a fresh interpreter).

Floors, measured right before each spin-up on the same cores:

- import floor: one interpreter importing every node program (`harness.node.programs`): what a
  template pays once, the least a start can cost;
- node floor: N interpreters started at once, each importing all the programs of a node: what
  a node cost before the fork server (one interpreter per node at least);
- container floor (docker): N containers of the node image started at once, each publishing a
  node's ports and running `sleep`: what the engine costs before any node program runs.

Memory: a sampler thread sums the RSS of each node's process tree (orchestrator, its fork
server and programs; on docker and swarm the container's tree from its init) from the start
until one second after healthy (peak per node); once healthy, each node's PSS (RSS with shared
pages divided among their users: forked processes share most of theirs), plus its share of the
local template's PSS (`pss_mb_per_node`; the target is judged on its mean over the nodes, the
testnet's whole PSS divided by its nodes, on the local backend: containers share no template).

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

from harness.cli import default_topology
from harness.driver import (
    SPAWN_MODES,
    BackendOptions,
    HarnessError,
    InternetComputer,
    Run,
    Subnet,
    SubnetType,
    Testnet,
)
from harness.node.layout import DataDir, read_pid_file

Progress = Callable[[str, int, int], None]

NODE_IMPORTS = (
    "harness.node.orchestrator.orchestrator",
    "harness.node.replica.__main__",
    "harness.node.gateway.__main__",
)
TARGET_LOCAL_DEFAULT = 1.5
TARGET_DOCKER_DEFAULT = 3.0
TARGET_LOCAL_100 = 30.0
TARGET_PSS_MB_PER_NODE = 35.0
DEFAULT = "default"
FLOOR_TIMEOUT = 600.0
MB = 2**20


def topology(size: str) -> InternetComputer:
    """The testnet of a size: `default` (`harness up`'s) or a node count."""
    if size == DEFAULT:
        return default_topology().with_name("spinupdefault")
    nodes = int(size)
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


def import_floor() -> float:
    return interpreters_floor(["import harness.node.programs as p; p.import_all()"])


def container_floor(nodes: int) -> float:
    """Seconds from asking the engine for `nodes` containers of the node image at once (each
    publishing a node's ports on loopback, on a network of their own, running `sleep`) until
    all run: what the engine costs before any node program starts."""
    from concurrent.futures import ThreadPoolExecutor

    import docker

    from harness.driver.backends.images import build_node_image
    from harness.node.layout import Port

    client = docker.from_env()
    image = build_node_image()
    network = client.networks.create(f"spinup-floor-{os.getpid()}", labels={"spinup-floor": "1"})
    containers: list[Any] = []
    ports: dict[str, Any] = {f"{int(port)}/tcp": ("127.0.0.1", None) for port in Port}

    def one(_: int) -> None:
        containers.append(
            client.containers.run(
                image, ["sleep", "60"], entrypoint=[], detach=True, network=network.name,
                ports=ports, labels={"spinup-floor": "1"},
            )
        )  # fmt: skip

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:  # the docker backend's parallel starts
            list(pool.map(one, range(nodes)))
        return time.perf_counter() - started
    finally:
        for container in containers:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        network.remove()


# ----------------------------------------------------------------------------- memory
@dataclass
class RssSampler:
    """Samples the summed RSS of each node's process tree in a thread, every `interval` or
    less often: it spends at most a tenth of its time sampling."""

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
                took = time.perf_counter()
                self.sample()
                took = time.perf_counter() - took
                # At most a tenth of a core, or with thousands of processes the sampler (and
                # the GIL it holds) would slow the very start it measures.
                self._stop.wait(max(self.interval, 9 * took))
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
        ("harness forkserver", "forkserver"),  # "... of the orchestrator of NODE"
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
            record = read_pid_file(DataDir(nodes_dir / node_id).pid_file("orchestrator"))
            if record is not None:
                found[node_id] = record.pid
        return found

    return roots


def template_pss(run: Run) -> int:
    """PSS of the local backend's template of the run (forked orchestrators share its pages,
    so its own PSS is part of what the nodes cost); 0 when there is none (exec)."""
    title = f"harness template of run {run.run_id}"
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith(title):
            with contextlib.suppress(psutil.Error):
                return int(process.memory_full_info().pss)
    return 0


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
def spin_up(backend: str, size: str, run: Run, interval: float, spawn: str) -> dict[str, Any]:
    """Start a testnet of a size, time it until healthy, sample its memory, stop it."""
    options = BackendOptions(spawn=spawn)
    marks: dict[str, float] = {}
    spawned: list[float] = []
    started = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        now = time.perf_counter() - started
        if phase == "starting nodes":
            spawned.append(now)
        if done == total:
            marks[phase] = now

    testnet = Testnet(topology(size), run, backend, options)
    nodes = len(testnet.plan.nodes)
    roots = local_roots(testnet) if backend == "local" else docker_roots(testnet)  # swarm too
    sampler = RssSampler(roots, interval)
    result: dict[str, Any] = {"backend": backend, "size": size, "nodes": nodes, "spawn": spawn}
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
        for subnet in snapshot.subnets_of_type(SubnetType.CLOUD_ENGINE):
            for node in subnet.nodes:
                if not node.status(port=80).is_healthy:
                    raise BenchError(f"{node.node_id} is not healthy through ic-gateway")
        time.sleep(1.0)  # keep sampling a little past healthy
        sampler.stop()
        pss, by_program = memory_now(roots())
        template = template_pss(run) if backend == "local" else 0
        share = template // max(1, len(pss))
        with_share = {node_id: value + share for node_id, value in pss.items()}
        # Gaps between successive backend.start_node() calls returning (Testnet.start runs
        # `backend.parallel_starts` of them at once; the docker backend's waits for its node).
        each = [b - a for a, b in zip([0.0, *spawned], spawned, strict=False)]
        result.update(
            {
                "healthy_s": round(healthy, 3),
                "all_spawned_s": round(marks.get("starting nodes", float("nan")), 3),
                "peak_rss_mb_per_node": _mb_stats(sampler.peak),
                "pss_mb_per_node_own": _mb_stats(pss),
                "template_pss_mb": round(template / MB, 1),
                "pss_mb_per_node": _mb_stats(with_share),
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


def measure(
    backend: str, size: str, repeat: int, run: Run, interval: float, spawn: str
) -> dict[str, Any]:
    """Floors and spin-ups, interleaved, `repeat` times; medians of each."""
    trials: list[dict[str, Any]] = []
    nodes = len(topology(size).plan().nodes)
    for index in range(repeat):
        console_note(f"{backend} {size} ({nodes} nodes), trial {index + 1}/{repeat}: floors")
        floor_import = import_floor()
        floor_nodes = node_floor(nodes)
        floor_containers = container_floor(nodes) if backend == "docker" else None
        console_note(f"{backend} {size} ({nodes} nodes), trial {index + 1}/{repeat}: spin-up")
        trial = spin_up(backend, size, run, interval, spawn)
        trial["import_floor_s"] = round(floor_import, 3)
        trial["node_floor_s"] = round(floor_nodes, 3)
        if floor_containers is not None:
            trial["container_floor_s"] = round(floor_containers, 3)
        trial["loadavg_1m"] = round(os.getloadavg()[0], 2)
        trials.append(trial)
        if "error" in trial:
            break
    good = [t for t in trials if "error" not in t]
    summary: dict[str, Any] = {
        "backend": backend,
        "size": size,
        "nodes": nodes,
        "spawn": spawn,
        "trials": trials,
    }
    if good:
        healthy = median([t["healthy_s"] for t in good])
        floor_import = median([t["import_floor_s"] for t in good])
        floor_nodes = median([t["node_floor_s"] for t in good])
        summary.update(
            {
                "healthy_s": round(healthy, 3),
                "import_floor_s": round(floor_import, 3),
                "node_floor_s": round(floor_nodes, 3),
                "ratio_to_import_floor": round(healthy / floor_import, 2),
                "ratio_to_node_floor": round(healthy / floor_nodes, 2),
                **_container_ratio(good, healthy),
                "peak_rss_mb_per_node_max": max(
                    t["peak_rss_mb_per_node"].get("max", 0) for t in good
                ),
                "pss_mb_per_node_mean": median([t["pss_mb_per_node"].get("mean", 0) for t in good]),
                "pss_mb_per_node_max": max(t["pss_mb_per_node"].get("max", 0) for t in good),
                "pss_mb_total": round(
                    median([t["pss_mb_per_node"].get("mean", 0) for t in good]) * nodes, 1
                ),
            }
        )
    else:
        summary["error"] = trials[-1].get("error")
    return summary


def _container_ratio(good: list[dict[str, Any]], healthy: float) -> dict[str, float]:
    floors = [t["container_floor_s"] for t in good if "container_floor_s" in t]
    if not floors:
        return {}
    floor = median(floors)
    return {
        "container_floor_s": round(floor, 3),
        "ratio_to_container_floor": round(healthy / floor, 2),
    }


def console_note(text: str) -> None:
    console.log(text)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the figure it is judged on and whether it was met."""

    def find(backend: str, size: str) -> dict[str, Any] | None:
        for r in results:
            if r["backend"] == backend and r["size"] == size and "healthy_s" in r:
                return r
        return None

    checks: list[dict[str, Any]] = []
    for backend, size, limit in (
        ("local", DEFAULT, TARGET_LOCAL_DEFAULT),
        ("docker", DEFAULT, TARGET_DOCKER_DEFAULT),
        ("local", "100", TARGET_LOCAL_100),
    ):
        r = find(backend, size)
        if r is not None:
            checks.append(
                {
                    "target": f"{size} testnet healthy on {backend} <= {limit:g} s",
                    "value": r["healthy_s"],
                    "met": r["healthy_s"] <= limit,
                }
            )
    for r in results:
        if "healthy_s" not in r or r["backend"] != "local":
            continue  # containers share no template: their memory is reported, not judged
        checks.append(
            {
                "target": f"local {r['size']}: PSS per node (all nodes' PSS and the template's, "
                f"over the nodes) <= {TARGET_PSS_MB_PER_NODE:g} MB",
                "value": r["pss_mb_per_node_mean"],
                "met": r["pss_mb_per_node_mean"] <= TARGET_PSS_MB_PER_NODE,
            }
        )
    return checks


def _sizes(text: str) -> list[str]:
    sizes = [part.strip() for part in text.split(",") if part.strip()]
    for size in sizes:
        if size != DEFAULT and not (size.isdigit() and 2 <= int(size) <= 1000):
            raise argparse.ArgumentTypeError(f"{size!r}: a size is `default` or 2 to 1000 nodes")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-sizes", type=_sizes, default=[DEFAULT, "13", "100"])
    parser.add_argument("--docker-sizes", type=_sizes, default=[DEFAULT, "13"])
    parser.add_argument(
        "--swarm-sizes",
        type=_sizes,
        default=[DEFAULT, "13"],
        help="needs the docker engine to be a swarm manager (skipped, saying so, otherwise)",
    )
    parser.add_argument("--spawn", choices=SPAWN_MODES, default="fork")
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
        for backend, size in plan:
            nodes = len(topology(size).plan().nodes)
            repeat = max(1, args.repeat) if nodes <= 13 else 1
            results.append(measure(backend, size, repeat, run, args.sample_interval, args.spawn))
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
        "size",
        "spawn",
        "healthy",
        "import floor",
        "ratio",
        "node floor",
        "ratio",
        "container floor",
        "ratio",
        "peak RSS/node",
        "PSS/node mean",
        "PSS/node max",
        "PSS total",
    ):
        table.add_column(column, justify="right")
    for r in results:
        label = f"{r['size']} ({r['nodes']})"
        if "healthy_s" not in r:
            table.add_row(r["backend"], label, r["spawn"], f"[red]{r.get('error')}[/red]")
            continue
        table.add_row(
            r["backend"],
            label,
            r["spawn"],
            fmt_s(r["healthy_s"]),
            fmt_s(r["import_floor_s"]),
            f"{r['ratio_to_import_floor']:.2f}",
            fmt_s(r["node_floor_s"]),
            f"{r['ratio_to_node_floor']:.2f}",
            fmt_s(r["container_floor_s"]) if "container_floor_s" in r else "-",
            f"{r['ratio_to_container_floor']:.2f}" if "container_floor_s" in r else "-",
            f"{r['peak_rss_mb_per_node_max']:.0f} MB",
            f"{r['pss_mb_per_node_mean']:.1f} MB",
            f"{r['pss_mb_per_node_max']:.1f} MB",
            f"{r['pss_mb_total']:.0f} MB",
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
