"""The testnets of every run of this state root, seen from outside the runs that started them:
what `harness ls`, `harness logs` and `harness down TESTNET` work on.

A testnet is found by its id (claimed for its run, `harness.driver.claims`) and described by
the record its `Testnet` keeps in its directory (`testnet.json`). Its run's owner tells who
holds it: a `harness up` (in the foreground or detached), a pytest session, or nobody, when a
run ended with `--keep-testnet`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.driver.backend_registry import get_backend
from harness.driver.backends.base import Backend, BackendOptions
from harness.driver.errors import HarnessError
from harness.driver.holds import holder_of
from harness.driver.lifetime import expires
from harness.driver.run import (
    Owner,
    Run,
    is_kept,
    owner_of,
    sweep,
)
from harness.driver.state import state_root
from harness.driver.testnet import RECORD_FILE, TESTNET_IDS, Testnet

# Owners that tear their testnet down on SIGTERM, so `harness down` may ask them to.
STOPPABLE_OWNERS = ("harness up", "harness up --detach")
OWNER_EXIT_TIMEOUT = 60.0


@dataclass(frozen=True)
class TestnetEntry:
    """One testnet of the machine: its id, run, directory, record and who holds it."""

    __test__ = False  # not a pytest test class

    testnet_id: str
    run: Run
    record: dict[str, Any]
    owner: Owner | None
    kept: bool
    holder: Owner | None = None
    """A live session attached to it (`harness.driver.holds`), besides its owner."""
    expires: float | None = None
    """When it is removed (Unix time; `harness.driver.lifetime`), None: when someone does."""

    @property
    def directory(self) -> Path:
        return self.run.directory / self.testnet_id

    @property
    def backend_name(self) -> str:
        return str(self.record.get("backend", "?"))

    @property
    def state(self) -> str:
        return str(self.record.get("state", "starting"))

    @property
    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.record.get("nodes") or []
        return nodes

    def held_by(self) -> str:
        """Who holds the testnet, for people: `harness up --detach (pid 123)`, `kept`, ...,
        and the session attached to it, if any."""
        if self.owner is not None:
            held = f"{self.owner.purpose or 'a run'} (pid {self.owner.pid})"
        else:
            held = "kept" if self.kept else "nobody (swept by the next run)"
        if self.holder is not None:
            held += f", attached by {self.holder.purpose or 'a process'} (pid {self.holder.pid})"
        return held

    def backend(self) -> Backend:
        """A backend of the testnet's kind, attached to it (to read its nodes' logs)."""
        return get_backend(self.backend_name)(
            self.run, self.testnet_id, self.directory / "nodes", BackendOptions()
        )


def testnets() -> list[TestnetEntry]:
    """Every testnet of this state root that has a record, by id."""
    found = []
    runs = state_root() / "runs"
    for testnet_id, run_id in sorted(TESTNET_IDS.owners().items()):
        if not run_id:
            continue
        run = Run(run_id, runs / run_id)
        try:
            record = json.loads((run.directory / testnet_id / RECORD_FILE).read_text())
        except (OSError, ValueError):
            continue  # being created, or gone with its run
        found.append(
            TestnetEntry(
                testnet_id,
                run,
                record,
                owner_of(run.directory),
                is_kept(run.directory),
                holder_of(run.directory / testnet_id),
                expires(run.directory / testnet_id),
            )
        )
    return found


def attach(testnet_id: str, purpose: str, sample: bool = False) -> Testnet:
    """The running testnet `testnet_id`, held by this process until its `close()`, which leaves
    it up (`Testnet.attach`); `HarnessError` when there is no such testnet, when it is not up,
    or when another live process holds it."""
    entry = check_attachable(testnet_id)
    return Testnet.attach(entry.run, testnet_id, entry.record, sample, purpose)


def check_attachable(testnet_id: str) -> TestnetEntry:
    """The testnet `testnet_id` if a session can attach to it; `HarnessError` saying why not
    (no such testnet, not up, a backend that cannot attach) otherwise."""
    entry = find_testnet(testnet_id)
    if entry.state != "up":
        raise HarnessError(f"testnet {testnet_id} is {entry.state}, not up: it cannot be attached")
    if not get_backend(entry.backend_name).can_attach():
        raise HarnessError(
            f"testnet {testnet_id} runs on the {entry.backend_name} backend, which cannot attach "
            "to a testnet another process started (the local and docker backends can)"
        )
    return entry


def find_testnet(testnet_id: str) -> TestnetEntry:
    """The testnet `testnet_id`; `HarnessError` naming the ones there are otherwise."""
    entries = testnets()
    for entry in entries:
        if entry.testnet_id == testnet_id:
            return entry
    known = ", ".join(e.testnet_id for e in entries) or "none"
    raise HarnessError(f"no testnet {testnet_id!r}; testnets: {known} (see `harness ls`)")


def remove_testnet(entry: TestnetEntry, force: bool = False) -> str:
    """Remove one testnet; return what was done. A `harness up` that holds it is asked to tear
    it down (SIGTERM) and waited for; one held by a running pytest session is left to it
    unless `force`; any other (kept, or its owner gone) is removed here."""
    if entry.holder is not None and not force:
        raise HarnessError(
            f"testnet {entry.testnet_id} is attached to by {entry.holder.purpose or 'a process'} "
            f"(pid {entry.holder.pid}); --force removes it now"
        )
    owner = entry.owner
    if owner is not None:
        if owner.purpose not in STOPPABLE_OWNERS and not force:
            raise HarnessError(
                f"testnet {entry.testnet_id} belongs to a running {owner.purpose or 'run'} "
                f"(pid {owner.pid}), which removes it when it ends; --force removes it now"
            )
        if owner.purpose in STOPPABLE_OWNERS:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(owner.pid)
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(OWNER_EXIT_TIMEOUT)
                except psutil.TimeoutExpired:
                    process.kill()
            if owner_of(entry.run.directory) is None and not _still_there(entry):
                return f"{owner.purpose} (pid {owner.pid}) tore testnet {entry.testnet_id} down"
    others = [
        tid
        for tid, run_id in TESTNET_IDS.owners().items()
        if run_id == entry.run.run_id and tid != entry.testnet_id
    ]
    if not others:
        sweep(only_run=entry.run.run_id)  # the run's last testnet: everything of the run goes
    else:
        _remove_one(entry)
    return f"removed testnet {entry.testnet_id}"


def _still_there(entry: TestnetEntry) -> bool:
    return TESTNET_IDS.owners().get(entry.testnet_id) == entry.run.run_id


def _remove_one(entry: TestnetEntry) -> None:
    """Remove one testnet of a run that has others: what its backend made, its directory."""
    run_id = entry.run.run_id
    get_backend(entry.backend_name).sweep(lambda r: r == run_id, entry.testnet_id)
    shutil.rmtree(entry.directory, ignore_errors=True)
    TESTNET_IDS.release(entry.testnet_id)
