"""The replica stub's command line, parsed and checked into one frozen `Config`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.node.layout import Port
from harness.node.listen import ListenAddress, parse_listen

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class Config:
    http_listen: ListenAddress
    metrics_listen: ListenAddress
    replica_version: str
    node_id: str | None
    subnet_id: str | None
    root_key_file: Path | None
    warmup_seconds: float
    block_interval: float
    faults_file: Path | None
    graceful_timeout: float
    log_level: str


def _listen(value: str) -> ListenAddress:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(minimum: float, inclusive: bool) -> Callable[[str], float]:
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
        if (
            not math.isfinite(seconds)
            or seconds < minimum
            or (seconds == minimum and not inclusive)
        ):
            raise argparse.ArgumentTypeError(f"{value!r}: must be a finite number {bound}")
        return seconds

    return parse


def _non_empty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replica",
        description="Stub of an IC replica: /api/v2/status, IC-style rejects, metrics, faults.",
    )
    add = parser.add_argument
    add(
        "--http-listen",
        type=_listen,
        default=f"0.0.0.0:{Port.REPLICA_HTTP}",
        help="public API (default %(default)s)",
    )
    add(
        "--metrics-listen",
        type=_listen,
        default=f"0.0.0.0:{Port.REPLICA_METRICS}",
        help="metrics (default %(default)s)",
    )
    add("--replica-version", type=_non_empty, default="0.0.0", help="reported as impl_version")
    add("--node-id", type=_non_empty, help="this node's id (metrics label)")
    add("--subnet-id", type=_non_empty, help="this node's subnet id (metrics label)")
    add("--root-key-file", type=Path, help="DER root key (133 bytes); default: a fixed key")
    add("--warmup-seconds", type=_seconds(0, True), default=0.2, help="start -> healthy time")
    add(
        "--block-interval",
        type=_seconds(0, False),
        default=0.1,
        help="seconds per certified height",
    )
    add("--faults-file", type=Path, help="JSON fault knobs, re-read on change")
    add("--graceful-timeout", type=_seconds(0, False), default=5.0, help="drain bound on SIGTERM")
    add("--log-level", type=str.lower, choices=LOG_LEVELS, default="info")
    return parser


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse `argv`; bad flags print a message and exit 2 (argparse's usage error)."""
    args = build_parser().parse_args(argv)
    return Config(**vars(args))
