"""Partitioning a node: iptables rules in its task container's network namespace (entered with
nsenter from this machine, as root) that refuse every packet but the loopback's."""

from __future__ import annotations

import os
import shutil
import subprocess

from harness.driver.errors import BackendUnavailable

# Refused rather than dropped: the access proxy's SOCKS handshake has no timeout in httpcore, so
# a dropped connection would hold the harness for the kernel's SYN retries (~2 min). Outgoing
# ICMP stays allowed, or the refusals themselves (ICMP port unreachable) would be refused.
_PARTITION_TAG = ("-m", "comment", "--comment", "harness-partition", "-j", "REJECT")
PARTITION_RULES = (
    ("INPUT", "!", "-i", "lo", *_PARTITION_TAG),
    ("OUTPUT", "!", "-o", "lo", "!", "-p", "icmp", *_PARTITION_TAG),
)
_NO_TOOLS = (
    "partitioning a swarm node needs nsenter and iptables on its machine "
    "(Debian packages util-linux and iptables)"
)


def unavailable() -> str | None:
    """Why this machine cannot partition its nodes, if it cannot."""
    if shutil.which("nsenter") is None or shutil.which("iptables") is None:
        return _NO_TOOLS
    if os.geteuid() != 0:
        return "partitioning a swarm node needs root (iptables in its network namespace)"
    return None


def insert_rules(pid: int) -> str | None:
    """Add the partition's rules in the network namespace of process `pid`; what iptables
    said when it refused one (none of the rules then stays)."""
    for rule in PARTITION_RULES:
        result = _netns_iptables(pid, "-I", *rule)
        if result.returncode != 0:
            drop_rules(pid)
            return result.stderr.strip()
    return None


def drop_rules(pid: int) -> None:
    """Remove the partition's rules (every copy of each) from `pid`'s namespace."""
    for rule in PARTITION_RULES:
        for _ in range(100):
            deleted = _netns_iptables(pid, "-D", *rule)
            if deleted.returncode != 0:
                break


def _netns_iptables(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """iptables in the network namespace of process `pid` (a container's)."""
    nsenter, iptables = shutil.which("nsenter"), shutil.which("iptables")
    if nsenter is None or iptables is None:
        raise BackendUnavailable(_NO_TOOLS)
    return subprocess.run(
        [nsenter, "-t", str(pid), "-n", iptables, "-w", *args],
        capture_output=True,
        text=True,
        check=False,
    )
