"""A swarm of three machines simulated on one host, for the swarm backend's multi-machine tests.

Each machine is a Docker engine of its own (data directory, exec root, socket, cgroup parent)
started in a network namespace of its own; the three namespaces are joined by veth pairs to a
bridge in a fourth namespace (the "LAN", so that the host's firewall rules, Docker's FORWARD
policy among them, never see the traffic). Machine 0 initialises the swarm advertising its LAN
address; machines 1 and 2 join it as workers. The node image is copied into every engine
(`docker save` | `docker load`), as a registry would serve it. The harness must run in machine
0's network namespace, where the access proxy's port is published on that machine's loopback:
`run_in_manager()` runs a command there. The three engines start, load the image and stop at
the same time (each step waits on the slowest machine, not on the sum of them).

Needs root, `ip` (iproute2), `nsenter` and `dockerd`; `missing()` says what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

LAN_PREFIX = "10.97.0"


def missing() -> str | None:
    """Why the simulation cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, extra docker engines)"
    for tool in ("ip", "nsenter", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def _each(machines: list[Machine], step: Callable[[Machine], object]) -> None:
    """`step` on every machine at once; the first failure is raised once all are done."""
    with ThreadPoolExecutor(len(machines) or 1) as pool:
        for future in [pool.submit(step, machine) for machine in machines]:
            future.result()


def _run(*command: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Machine:
    index: int
    netns: str
    root: Path
    address: str
    veth: str  # its end in the LAN namespace
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def docker(self, *args: str, timeout: float = 300) -> str:
        return _run("docker", "-H", self.socket, *args, timeout=timeout)


@dataclass
class SwarmMachines:
    """Three engines in a swarm (machine 0 the manager); `close()` removes everything."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    base: Path = Path("/tmp")
    machines: list[Machine] = field(default_factory=list)

    @property
    def lan(self) -> str:
        return f"hsw-lan-{self.tag}"

    def start(self, image: str) -> SwarmMachines:
        try:
            self._network()
            _each(self.machines, self._engine)
            self._swarm()
            self._load(image)
        except BaseException:
            self.close()
            raise
        return self

    def _network(self) -> None:
        _run("ip", "netns", "add", self.lan)
        _run("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.lan, "link", "set", "br0", "up")
        for index in range(3):
            netns = f"hsw-m{index}-{self.tag}"
            root = self.base / f"hsw-m{index}-{self.tag}"
            root.mkdir(parents=True)
            machine = Machine(index, netns, root, f"{LAN_PREFIX}.{index + 2}", f"m{index}")
            self.machines.append(machine)
            _run("ip", "netns", "add", netns)
            _run("ip", "-n", netns, "link", "set", "lo", "up")
            _run("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name",
                 machine.veth, "netns", self.lan)  # fmt: skip
            _run("ip", "-n", self.lan, "link", "set", machine.veth, "master", "br0", "up")
            _run("ip", "-n", netns, "addr", "add", f"{machine.address}/24", "dev", "eth0")
            _run("ip", "-n", netns, "link", "set", "eth0", "up")

    def _engine(self, machine: Machine) -> None:
        config = machine.root / "daemon.json"
        config.write_text(
            json.dumps({"data-root": str(machine.root / "data"), "storage-driver": "vfs"})
        )
        log = (machine.root / "dockerd.log").open("wb")
        # nsenter --net only: `ip netns exec` would also remount /sys, hiding the cgroups.
        machine.daemon = subprocess.Popen(
            [
                "nsenter", f"--net=/var/run/netns/{machine.netns}",
                "dockerd", "--config-file", str(config),
                "--exec-root", str(machine.root / "exec"),
                "--pidfile", str(machine.root / "docker.pid"),
                "-H", machine.socket,
                "--bridge", "none", "--iptables=false", "--ip6tables=false",
                "--cgroup-parent", f"/{machine.netns}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            if machine.daemon.poll() is not None:
                raise RuntimeError(
                    f"dockerd of machine {machine.index} exited: "
                    f"{(machine.root / 'dockerd.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(RuntimeError):
                machine.docker("info", "--format", "{{.ServerVersion}}", timeout=10)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd of machine {machine.index} did not answer in 60 s")
            time.sleep(0.5)

    def _swarm(self) -> None:
        manager = self.machines[0]
        manager.docker("swarm", "init", "--advertise-addr", manager.address)
        token = manager.docker("swarm", "join-token", "-q", "worker").strip()
        for worker in self.machines[1:]:
            worker.docker(
                "swarm", "join", "--advertise-addr", worker.address, "--token", token,
                f"{manager.address}:2377",
            )  # fmt: skip

    def _load(self, image: str) -> None:
        archive = self.base / f"hsw-image-{self.tag}.tar"
        try:
            _run("docker", "save", "-o", str(archive), image, timeout=600)
            _each(
                self.machines,
                lambda machine: machine.docker("load", "-i", str(archive), timeout=900),
            )
        finally:
            archive.unlink(missing_ok=True)

    def node_ids(self) -> dict[str, int]:
        """Swarm node id -> machine index."""
        listing = self.machines[0].docker("node", "ls", "--format", "{{.ID}} {{.Hostname}}")
        ids: dict[str, int] = {}
        for machine in self.machines:
            info = machine.docker("info", "--format", "{{.Swarm.NodeID}}").strip()
            ids[info] = machine.index
        assert len(ids) == 3, listing
        return ids

    def cut_off(self, index: int, cut: bool = True) -> None:
        """Pull (or plug back) machine `index`'s cable."""
        state = "down" if cut else "up"
        _run("ip", "-n", self.lan, "link", "set", self.machines[index].veth, state)

    def run_in_manager(self, *command: str, env: dict[str, str], timeout: float) -> str:
        """Run `command` in machine 0's network namespace, talking to its engine."""
        done = subprocess.run(
            ["nsenter", f"--net=/var/run/netns/{self.machines[0].netns}", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env, "DOCKER_HOST": self.machines[0].socket},
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} in machine 0: exit {done.returncode}\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done.stdout

    def close(self) -> None:
        def leave(machine: Machine) -> None:
            with contextlib.suppress(Exception):
                machine.docker("swarm", "leave", "--force", timeout=30)

        _each(self.machines[1:], leave)  # the workers, then the manager
        _each(self.machines[:1], leave)
        for machine in self.machines:
            if machine.daemon is not None and machine.daemon.poll() is None:
                machine.daemon.send_signal(signal.SIGTERM)
        _each(self.machines, self._stop_engine)
        _each(self.machines, self._remove)
        _run("ip", "netns", "del", self.lan, check=False)

    @staticmethod
    def _stop_engine(machine: Machine) -> None:
        """Wait for the engine sent SIGTERM; SIGKILL it after 30 s."""
        if machine.daemon is None:
            return
        try:
            machine.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(machine.daemon.pid, signal.SIGKILL)
            machine.daemon.wait(timeout=10)

    @staticmethod
    def _remove(machine: Machine) -> None:
        _run("ip", "netns", "del", machine.netns, check=False)
        # vfs layers are plain directories; containers' mounts are gone with the daemon.
        _run("rm", "-rf", "--one-file-system", str(machine.root), check=False, timeout=600)
