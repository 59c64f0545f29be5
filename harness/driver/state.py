"""Where the harness keeps its state on this machine: one state root for the runs, their claims
and their records (`HARNESS_STATE_DIR`, default a per-user temp folder). Runs of different
state roots never touch each other's things."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def state_root() -> Path:
    """The state root (made if missing)."""
    configured = os.environ.get("HARNESS_STATE_DIR")
    root = (
        Path(configured) if configured else Path(tempfile.gettempdir()) / f"harness-{os.getuid()}"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root
