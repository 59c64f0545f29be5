"""Loopback address blocks for the local backend: one 127.A.B.0/24 block per testnet.

A block is claimed by creating `<state-root>/claims/127.A.B` exclusively (so parallel runs and
pytest-xdist workers never share one); the claim names its run, and claims of runs whose owner
is gone are released by the sweep. Nodes get 127.A.B.2, .3, ... in plan order.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from pathlib import Path

from harness.driver.errors import BackendUnavailable

# 127.1-99.x.y: the harness's own tests use 127.100-250 for single programs.
_FIRST_OCTET = range(1, 100)
NODE_PORTS = (80, 443, 7070, 8080, 9090, 9091, 9324, 9325)


def _claims_dir() -> Path:
    from harness.driver.run import state_root

    path = state_root() / "claims"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ports_free(ip: str, ports: tuple[int, ...]) -> bool:
    try:
        for port in ports:
            with socket.socket() as sock:
                sock.bind((ip, port))
    except OSError:
        return False
    return True


def claim_block(run_id: str, testnet_id: str, tries: int = 200) -> str:
    """Claim a free block; return its prefix `127.A.B`."""
    rng = random.Random()
    claims = _claims_dir()
    for _ in range(tries):
        prefix = f"127.{rng.choice(_FIRST_OCTET)}.{rng.randint(0, 255)}"
        try:
            fd = os.open(claims / prefix, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as out:
            out.write(f"{run_id} {testnet_id}\n")
        if _ports_free(f"{prefix}.2", NODE_PORTS):
            return prefix
        release_block(prefix)
    raise BackendUnavailable(f"no free loopback block 127.A.B.0/24 found in {tries} tries")


def release_block(prefix: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_claims_dir() / prefix).unlink()


def release_stale_claims(everything: bool = False, only_run: str | None = None) -> None:
    """Release claims of runs that no longer exist (or of all runs, or one run)."""
    from harness.driver.run import state_root

    runs = state_root() / "runs"
    for claim in _claims_dir().iterdir():
        try:
            run_id = claim.read_text().split()[0]
        except (OSError, IndexError):
            run_id = ""
        if (
            everything
            or (only_run is not None and run_id == only_run)
            or (only_run is None and not (runs / run_id).is_dir())
        ):
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()


def port_80_allowed(ip: str) -> bool:
    """Whether this process may bind port 80 (root or CAP_NET_BIND_SERVICE)."""
    try:
        with socket.socket() as sock:
            sock.bind((ip, 80))
    except PermissionError:
        return False
    except OSError:
        return True  # taken, not forbidden
    return True
