"""Partitions for the local backend: iptables rules that drop every packet to and from a node's
loopback address, so nothing (no other node, nor the harness) reaches it, as a container taken
off its network. Each rule carries the comment `harness:<run id>:<node id>:<state root>` (the
state root as a short hash), so a sweep removes the rules of its own runs that died before
healing, and never those of another state root's runs (the kernel's rules are one table for
every run on the machine).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable

from harness.driver.errors import BackendUnavailable, HarnessError
from harness.driver.state import state_root

_CHAINS = (("INPUT", "-d"), ("OUTPUT", "-s"))
_TAG = "harness:"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables")
    if binary is None:
        raise BackendUnavailable(
            "partitioning a node on the local backend needs iptables (Debian package iptables)"
        )
    return subprocess.run([binary, "-w", *args], capture_output=True, text=True, check=False)


def _rule(chain: str, direction: str, ip: str, comment: str) -> list[str]:
    return [chain, direction, f"{ip}/32", "-m", "comment", "--comment", comment, "-j", "DROP"]


def _root() -> str:
    return hashlib.sha256(str(state_root()).encode()).hexdigest()[:8]


def _comment(run_id: str, node_id: str) -> str:
    return f"{_TAG}{run_id}:{node_id}:{_root()}"


def isolate(ip: str, run_id: str, node_id: str) -> None:
    """Drop all traffic to and from `ip`."""
    comment = _comment(run_id, node_id)
    for chain, direction in _CHAINS:
        result = _iptables("-I", *_rule(chain, direction, ip, comment))
        if result.returncode != 0:
            heal(ip, run_id, node_id)
            raise HarnessError(
                f"cannot partition {node_id} ({ip}): iptables said {result.stderr.strip()!r}"
                " (partitions on the local backend need root)"
            )


def heal(ip: str, run_id: str, node_id: str) -> None:
    """Remove the rules `isolate` added (every copy of them); a no-op when there are none."""
    comment = _comment(run_id, node_id)
    for chain, direction in _CHAINS:
        for _ in range(100):
            if _iptables("-D", *_rule(chain, direction, ip, comment)).returncode != 0:
                break


def sweep_rules(doomed_run: Callable[[str], bool]) -> int:
    """Remove the partition rules of every run of this state root for which `doomed_run(run_id)`
    is true."""
    if shutil.which("iptables") is None:
        return 0
    removed = 0
    root = _root()
    for chain, _ in _CHAINS:
        listing = _iptables("-S", chain)
        if listing.returncode != 0:
            continue
        for line in listing.stdout.splitlines():
            if f'"{_TAG}' not in line and f" {_TAG}" not in line:
                continue
            comment = line.split("--comment", 1)[1].split()[0].strip('"')
            run_id, _, rest = comment[len(_TAG) :].partition(":")
            if rest.rpartition(":")[2] == root and doomed_run(run_id):
                spec = line.split()[1:]  # "-A CHAIN ..." -> "CHAIN ..."
                spec = [part.strip('"') for part in spec]
                if _iptables("-D", *spec).returncode == 0:
                    removed += 1
    return removed
