"""Names that runs claim for themselves: a loopback block, a testnet id.

Every run of a state root (parallel `harness up`s, pytest-xdist workers) sees the same
`<state-root>/claims/<kind>/` directory. A name is a run's once `claim()` has created its file
there exclusively; the file names the run. `release_stale()`, part of the sweep, releases the
claims of runs whose state directory is gone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from harness.driver.state import state_root


class Claims:
    """The claims of one kind (`blocks`, `testnets`, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @property
    def directory(self) -> Path:
        path = state_root() / "claims" / self.kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def claim(self, name: str, run_id: str) -> bool:
        """Claim `name` for `run_id`; False when another claim has it."""
        try:
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            out.write(f"{run_id}\n")
        return True

    def release(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).unlink()

    def owners(self) -> dict[str, str]:
        """Every claimed name and the run id that holds it ("" when unreadable)."""
        found: dict[str, str] = {}
        for path in self.directory.iterdir():
            try:
                found[path.name] = path.read_text().split()[0]
            except (OSError, IndexError):
                found[path.name] = ""
        return found

    def release_stale(self, everything: bool = False, only_run: str | None = None) -> None:
        """Release the claims of runs that no longer exist (or of every run, or of one)."""
        runs = state_root() / "runs"
        for name, run_id in self.owners().items():
            if (
                everything
                or (only_run is not None and run_id == only_run)
                or (only_run is None and not (run_id and (runs / run_id).is_dir()))
            ):
                self.release(name)


def release_stale_claims(everything: bool = False, only_run: str | None = None) -> None:
    """`Claims.release_stale` for every kind of claim."""
    root = state_root() / "claims"
    if root.is_dir():
        for kind in root.iterdir():
            if kind.is_dir():
                Claims(kind.name).release_stale(everything, only_run)
