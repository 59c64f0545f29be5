"""The `harness` command line as a user runs it: a fresh interpreter, output captured."""

from __future__ import annotations

import subprocess
import sys


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
