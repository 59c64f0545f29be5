"""Run by `test_swarm_machines.py` in machine 0's network namespace of the simulated swarm
(`swarm_machines.py`): bring up a testnet of three nodes on the swarm backend, report which
machine each node landed on, cut one worker machine off, and time how long the harness takes to
report a node on it as unreachable. Prints one JSON document."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from harness.driver import InternetComputer, Run, Subnet, SubnetType, Testnet


def main() -> None:
    machine_of_swarm_node: dict[str, int] = json.loads(sys.argv[1])
    lan, veths = sys.argv[2], json.loads(sys.argv[3])
    run = Run.create()
    topology = InternetComputer().add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(3))
    report: dict[str, object] = {}
    try:
        with Testnet(topology, run, backend="swarm").start(timeout=240) as testnet:
            client = testnet.backend._client  # type: ignore[attr-defined]
            placement: dict[str, int] = {}
            for node in testnet.nodes():
                (service,) = client.services.list(
                    filters={"label": f"org.harness.node-id={node.node_id}"}
                )
                (task,) = [t for t in service.tasks() if t["Status"]["State"] == "running"]
                placement[node.node_id] = machine_of_swarm_node[task["NodeID"]]
            report["placement"] = placement
            victim = next(n for n in testnet.nodes() if placement[n.node_id] != 0)
            machine = placement[victim.node_id]
            subprocess.run(["ip", "-n", lan, "link", "set", veths[machine], "down"], check=True)
            try:
                started = time.monotonic()
                try:
                    victim.await_status_is_unavailable(timeout=60)
                    report["unreachable_after_s"] = round(time.monotonic() - started, 2)
                except Exception as exc:
                    report["unreachable_error"] = f"{type(exc).__name__}: {exc}"
                others = [n for n in testnet.nodes() if placement[n.node_id] != machine]
                report["others_healthy"] = all(n.status().is_healthy for n in others)
            finally:
                subprocess.run(["ip", "-n", lan, "link", "set", veths[machine], "up"], check=True)
    finally:
        run.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
