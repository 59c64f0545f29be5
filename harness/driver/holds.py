"""Which process acts on a testnet now: the one that started it, or one attached to it.

A process that attaches to a running testnet (`pytest --testnet`, `Testnet.attach`) takes its
hold: `holder.json` in the testnet's directory, made exclusively, naming the process (pid, start
time, purpose). While a live process other than the testnet's owner holds it, the owner acts on
nothing (the local backend's supervisor stands aside), a second attach is refused, and the sweep
leaves the testnet's run alone. A hold whose process is gone is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import psutil

from harness.driver.errors import HarnessError
from harness.driver.run import HOLD_FILE, Owner, live_owner


def holder_of(testnet_dir: Path) -> Owner | None:
    """The live process that holds the testnet, if any."""
    path = testnet_dir / HOLD_FILE
    if not path.exists():  # the common case, and the supervisor's every 0.1 s: one stat
        return None
    return live_owner(path)


def held_elsewhere(testnet_dir: Path) -> bool:
    """Whether a live process other than this one holds the testnet."""
    holder = holder_of(testnet_dir)
    return holder is not None and holder.pid != os.getpid()


def take_hold(testnet_dir: Path, testnet_id: str, purpose: str) -> None:
    """Hold the testnet for this process; `HarnessError` naming the holder when a live process
    holds it already."""
    path = testnet_dir / HOLD_FILE
    me = psutil.Process()
    document = json.dumps({"pid": me.pid, "create_time": me.create_time(), "purpose": purpose})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = live_owner(path)
            if holder is not None:
                raise HarnessError(
                    f"testnet {testnet_id} is attached to by {holder.purpose or 'a process'} "
                    f"(pid {holder.pid}); one session at a time acts on a testnet"
                ) from None
            path.unlink(missing_ok=True)  # its holder is gone
            continue
        with os.fdopen(fd, "w") as out:
            out.write(document)
        return
    raise HarnessError(f"testnet {testnet_id}: could not take its hold ({path})")


def release_hold(testnet_dir: Path) -> None:
    """Let go of the testnet, if this process holds it."""
    holder = holder_of(testnet_dir)
    if holder is not None and holder.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (testnet_dir / HOLD_FILE).unlink()
