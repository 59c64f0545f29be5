"""Loopback address blocks for the local backend: one 127.A.B.0/24 block per 250 nodes of a
testnet.

A block is a claim (`harness.driver.claims`, kind `blocks`), so parallel runs and pytest-xdist
workers never share one, and the sweep releases the blocks of runs that are gone. Nodes get
127.A.B.2, .3, ... .251 in plan order, then the next block's.
"""

from __future__ import annotations

import random
import socket

from harness.driver.claims import Claims
from harness.driver.errors import BackendUnavailable
from harness.node.catalog import NODE_PORTS
from harness.node.layout import Port

# 127.1-99.x.y: the harness's own tests use 127.100-250 for single programs.
_FIRST_OCTET = range(1, 100)
BLOCKS = Claims("blocks")


def _ports_free(ip: str, ports: tuple[int, ...]) -> bool:
    try:
        for port in ports:
            with socket.socket() as sock:
                sock.bind((ip, port))
    except OSError:
        return False
    return True


def claim_block(run_id: str, tries: int = 200) -> str:
    """Claim a free block; return its prefix `127.A.B`."""
    rng = random.Random()
    for _ in range(tries):
        prefix = f"127.{rng.choice(_FIRST_OCTET)}.{rng.randint(0, 255)}"
        if not BLOCKS.claim(prefix, run_id):
            continue
        if _ports_free(f"{prefix}.2", NODE_PORTS):
            return prefix
        BLOCKS.release(prefix)
    raise BackendUnavailable(f"no free loopback block 127.A.B.0/24 found in {tries} tries")


def release_block(prefix: str) -> None:
    BLOCKS.release(prefix)


NODES_PER_BLOCK = 250  # .2 to .251 of a /24


def claim_addresses(run_id: str, count: int) -> tuple[list[str], list[str]]:
    """Addresses for `count` nodes, from as many blocks as they need: (addresses in node order,
    the blocks claimed). On failure, what was claimed is released."""
    blocks: list[str] = []
    try:
        while len(blocks) * NODES_PER_BLOCK < count:
            blocks.append(claim_block(run_id))
    except BackendUnavailable:
        for prefix in blocks:
            release_block(prefix)
        raise
    addresses = [f"{blocks[i // NODES_PER_BLOCK]}.{i % NODES_PER_BLOCK + 2}" for i in range(count)]
    return addresses, blocks


def port_80_allowed(ip: str) -> bool:
    """Whether this process may bind port 80 (root or CAP_NET_BIND_SERVICE)."""
    try:
        with socket.socket() as sock:
            sock.bind((ip, Port.IC_GATEWAY))
    except PermissionError:
        return False
    except OSError:
        return True  # taken, not forbidden
    return True
