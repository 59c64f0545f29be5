"""The reaper of a testnet with a lifetime (`harness.driver.lifetime`): `python -m
harness.driver.reaper TESTNET`, a process of its own, waits until the testnet expires (its
lifetime may be renewed meanwhile) and no session holds it, then removes it as `harness down`
does, holding it meanwhile (`harness.driver.holds`) so that no session attaches to it as it
goes. It ends at once when the testnet is gone or has no lifetime any more."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from harness.driver.errors import HarnessError
from harness.driver.holds import holder_of, release_hold, take_hold
from harness.driver.lifetime import expires
from harness.driver.testnets import find_testnet, remove_testnet

log = logging.getLogger(__name__)

INTERVAL = 1.0


def reap(testnet_id: str) -> int:
    """Wait for the testnet's end and remove it; return the exit status (0)."""
    while True:
        try:
            entry = find_testnet(testnet_id)
        except HarnessError:
            return 0  # removed by someone else
        until = expires(entry.directory)
        if until is None:
            return 0  # its lifetime was taken away
        if time.time() >= until and holder_of(entry.directory) is None:
            try:  # held while it goes: no session attaches to it meanwhile
                take_hold(entry.directory, testnet_id, "its reaper (it expired)")
            except HarnessError:
                continue  # a session attached to it just now, and renews it
            if (expires(entry.directory) or 0) > time.time():
                release_hold(entry.directory)  # renewed just before
                continue
            log.warning("testnet %s expired: removing it", testnet_id)
            with contextlib.suppress(HarnessError):
                print(remove_testnet(entry, force=True), flush=True)
            return 0
        time.sleep(min(INTERVAL, max(0.05, until - time.time())))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(reap(sys.argv[1]))
