"""How long a testnet that is left up lives: `harness up --ttl 2h`, `pytest --keep-testnet`
(`--keep-ttl`, default 2 h). As the IC's Farm does for its groups, a testnet in use lives on: a
session attached to it (`Testnet.attach`) renews its lifetime when it attaches, before every
test (the reset) and when it lets go.

The lifetime is `lifetime.json` in the testnet's directory (`ttl` and `expires`, Unix time).
Its end is kept by a reaper: a small process of its own (`harness.driver.reaper`) started
when the lifetime is set, so an expired testnet is removed even when no harness command runs.
It carries the testnet's run tags, so whatever removes the testnet first (`harness down`, the
sweep) ends it too; it never removes a testnet a live session holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from harness.driver.errors import HarnessError
from harness.driver.run import TESTNET_ID_ENV, Run

LIFETIME_FILE = "lifetime.json"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_REAPERS: list[subprocess.Popen[bytes]] = []


def parse_duration(text: str, what: str = "a duration") -> float | None:
    """Seconds of `30s`, `90m`, `2h`, `1d` (a bare number: seconds); None for `0`, `none` or
    `never` (no end). `HarnessError` naming `what` for anything else."""
    if text.strip().lower() in ("none", "never"):
        return None
    match = _DURATION.match(text)
    if match is None:
        raise HarnessError(f"{what} {text!r}: expected e.g. 30s, 90m, 2h or 1d (0 or never: none)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return seconds or None


def describe_duration(seconds: float) -> str:
    """`1h 59m`, `4m 10s`, `12s`: for people."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def expires(testnet_dir: Path) -> float | None:
    """When the testnet expires (Unix time), or None when it lives until removed."""
    try:
        return float(json.loads((testnet_dir / LIFETIME_FILE).read_text())["expires"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def set_lifetime(run: Run, testnet_id: str, ttl: float) -> float:
    """Give the testnet `ttl` seconds from now and start its reaper; return when it expires."""
    testnet_dir = run.directory / testnet_id
    until = _write(testnet_dir, ttl)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HARNESS_")}
    env.update(run.run_tags())
    env[TESTNET_ID_ENV] = testnet_id
    env["HARNESS_STATE_DIR"] = str(run.directory.parent.parent)
    with (testnet_dir / "reaper.log").open("ab") as out:
        reaper = subprocess.Popen(
            [sys.executable, "-m", "harness.driver.reaper", testnet_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _REAPERS.append(reaper)  # never waited for: it outlives this process as a rule
    return until


def renew(testnet_dir: Path) -> None:
    """A session uses the testnet: its lifetime starts again from now (if it has one)."""
    try:
        ttl = float(json.loads((testnet_dir / LIFETIME_FILE).read_text())["ttl"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    _write(testnet_dir, ttl)


def _write(testnet_dir: Path, ttl: float) -> float:
    until = time.time() + ttl
    staging = testnet_dir / f".{LIFETIME_FILE}.{os.getpid()}"
    staging.write_text(json.dumps({"ttl": ttl, "expires": until}))
    staging.replace(testnet_dir / LIFETIME_FILE)
    return until
