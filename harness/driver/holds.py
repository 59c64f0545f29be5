"""Which process acts on a testnet now: the one that started it, or one attached to it.

A process that attaches to a running testnet (`pytest --testnet`, `Testnet.attach`) takes its
hold: `holder.json` in the testnet's directory, made exclusively, naming the process (pid, start
time, purpose). While a live process other than the testnet's owner holds it, the owner acts on
nothing (the local backend's supervisor stands aside, `harness up` leaves the record alone), a
second attach is refused, and the sweep leaves the testnet's run alone. A hold whose process is
gone is taken over. When a hold ends, `last-hold` says so: the owner then takes back what the
session changed (nodes started anew, say) before it acts again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import psutil

from harness.driver.errors import HarnessError
from harness.driver.run import HOLD_FILE, Owner, live_owner

LAST_HOLD_FILE = "last-hold"
"""Which hold ended last (pid and time): the owner takes back what it changed (`last_hold`)."""


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
        staging = testnet_dir / f".{LAST_HOLD_FILE}.{os.getpid()}"
        staging.write_text(f"{os.getpid()} {time.time()}\n")
        staging.replace(testnet_dir / LAST_HOLD_FILE)
        with contextlib.suppress(FileNotFoundError):
            (testnet_dir / HOLD_FILE).unlink()


def last_hold(testnet_dir: Path) -> str | None:
    """Which hold of the testnet ended last (None: none yet); when it changes, the owner takes
    back what the session changed."""
    try:
        return (testnet_dir / LAST_HOLD_FILE).read_text()
    except FileNotFoundError:
        return None


class HoldWatch:
    """What the owner of a testnet asks now and then (`harness up`'s record refresh, the local
    backend's supervisor): may it act, and has a session let go of the testnet (or died) since
    it last asked, so that it first takes back what that session changed."""

    def __init__(self, testnet_dir: Path) -> None:
        self.testnet_dir = testnet_dir
        self._seen = last_hold(testnet_dir)
        self._held = False

    def poll(self) -> bool | None:
        """None while another live process holds the testnet (act on nothing); else whether a
        session let go of it since the last poll (take back what it changed, then act)."""
        if held_elsewhere(self.testnet_dir):
            self._held = True
            return None
        seen = last_hold(self.testnet_dir)
        given_back = self._held or seen != self._seen
        self._seen, self._held = seen, False
        return given_back
