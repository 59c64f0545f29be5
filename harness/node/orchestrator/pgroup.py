"""Process groups: signal one, find its live members, wait until it is empty.

Every program runs as the leader of its own process group (within the node's session, which
the orchestrator leads), so signalling the group reaches the children it spawned too. Zombies
do not count as members: orphans are reparented to PID 1, which in a container may never reap
them, yet a zombie holds no port and no memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import psutil

POLL_INTERVAL = 0.05
# After SIGKILL, how long to wait for a group to vanish before giving up on it.
KILL_TIMEOUT = 5.0


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to every process of the group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_members(pgid: int, created_since: float | None = None) -> list[psutil.Process]:
    """Live (non-zombie) processes of group `pgid`, optionally only those created at or after
    `created_since` (a psutil create_time)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # some member is not ours to signal: still look at who is in the group
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) != pgid or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if created_since is not None and process.create_time() < created_since - 0.01:
                continue
        except (ProcessLookupError, psutil.Error):
            continue
        members.append(process)
    return members


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def wait_group_empty(pgid: int, timeout: float, created_since: float | None = None) -> bool:
    """Wait until the group has no live member; False if some are still alive at `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while group_members(pgid, created_since):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


def kill_members(members: list[psutil.Process], sig: signal.Signals) -> None:
    """Signal processes one by one (for members whose group leader is gone)."""
    for member in members:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            member.send_signal(sig)
