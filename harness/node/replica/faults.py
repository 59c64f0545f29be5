"""Fault knobs read from the `--faults-file` JSON file, re-read when the file changes.

The keys and their meaning are documented in the package docstring. A file with an unknown
key or a wrong type is logged and ignored: the knobs in force stay as they were.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Re-reading is cheap (one stat), but a request burst must not turn into a stat storm.
CHECK_INTERVAL = 0.1


class FaultsError(ValueError):
    """A faults file whose content is not a valid set of knobs."""


@dataclass(frozen=True)
class Faults:
    """The fault knobs in force; the defaults are "no fault"."""

    fail_at_start: int | None = None
    unhealthy: bool = False
    delay_seconds: float = 0.0
    critical_errors: int = 0


NO_FAULTS = Faults()


def _exit_code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise FaultsError(f'"fail_at_start" must be an exit code 0-255, got {value!r}')
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FaultsError(f'"unhealthy" must be true or false, got {value!r}')
    return value


def _delay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultsError(f'"delay_seconds" must be a number, got {value!r}')
    if not math.isfinite(value) or value < 0:
        raise FaultsError(f'"delay_seconds" must be a finite number >= 0, got {value!r}')
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultsError(f'"critical_errors" must be an integer >= 0, got {value!r}')
    return value


_KNOBS: dict[str, Callable[[Any], Any]] = {
    "fail_at_start": _exit_code,
    "unhealthy": _flag,
    "delay_seconds": _delay,
    "critical_errors": _count,
}


def parse_faults(text: str) -> Faults:
    """Parse a faults file's content; raise `FaultsError` naming the bad key or value."""
    if not text.strip():
        # Usually a writer caught between truncating and writing: keep the knobs in force.
        raise FaultsError("the file is empty (write it atomically: temporary file + rename)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FaultsError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FaultsError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_KNOBS))
    if unknown:
        raise FaultsError(f"unknown key(s) {unknown}; known keys are {sorted(_KNOBS)}")
    return Faults(**{key: _KNOBS[key](value) for key, value in data.items()})


class FaultsFile:
    """The knobs of one faults file, re-read when its stat signature changes.

    A missing file means no faults, so a test can create the file after the start and
    remove it to clear every fault.
    """

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._faults = NO_FAULTS
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = -math.inf
        self.refresh(force=True)

    @property
    def faults(self) -> Faults:
        """The knobs in force, re-reading the file if it changed (at most every 100 ms)."""
        self.refresh()
        return self._faults

    def refresh(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = self._clock()
        if not force and now - self._checked_at < CHECK_INTERVAL:
            return
        self._checked_at = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is not None:
                log.info("faults file %s removed: no faults in force", self.path)
            self._signature = None
            self._faults = NO_FAULTS
            return
        except OSError as exc:
            log.error(
                "faults file %s: cannot stat it: %s; keeping %s", self.path, exc, self._faults
            )
            return
        # Size and inode too: two writes within the mtime granularity must still be seen.
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            faults = parse_faults(self.path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            log.error(
                "faults file %s: cannot read it: %s; keeping %s", self.path, exc, self._faults
            )
            return
        except FaultsError as exc:
            log.error("faults file %s ignored: %s; keeping %s", self.path, exc, self._faults)
            return
        if faults != self._faults:
            log.info("faults file %s: now in force: %s", self.path, faults)
        self._faults = faults
