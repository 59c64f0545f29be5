"""Partitions for the local backend: iptables rules that drop every packet to and from a node's
loopback address, so nothing (no other node, nor the harness) reaches it, as a container taken
off its network. Each rule carries the comment `harness:<run id>:<node id>`, so a sweep removes
the rules of runs that died before healing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from harness.driver.errors import BackendUnavailable, HarnessError

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


def isolate(ip: str, run_id: str, node_id: str) -> None:
    """Drop all traffic to and from `ip`."""
    comment = f"{_TAG}{run_id}:{node_id}"
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
    comment = f"{_TAG}{run_id}:{node_id}"
    for chain, direction in _CHAINS:
        for _ in range(100):
            if _iptables("-D", *_rule(chain, direction, ip, comment)).returncode != 0:
                break


def sweep_rules(doomed_run: Callable[[str], bool]) -> int:
    """Remove the partition rules of every run for which `doomed_run(run_id)` is true."""
    if shutil.which("iptables") is None:
        return 0
    removed = 0
    for chain, _ in _CHAINS:
        listing = _iptables("-S", chain)
        if listing.returncode != 0:
            continue
        for line in listing.stdout.splitlines():
            if f'"{_TAG}' not in line and f" {_TAG}" not in line:
                continue
            comment = line.split("--comment", 1)[1].split()[0].strip('"')
            run_id = comment[len(_TAG) :].split(":", 1)[0]
            if doomed_run(run_id):
                spec = line.split()[1:]  # "-A CHAIN ..." -> "CHAIN ..."
                spec = [part.strip('"') for part in spec]
                if _iptables("-D", *spec).returncode == 0:
                    removed += 1
    return removed
