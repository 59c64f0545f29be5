"""Entry point of the replica stub: `replica ...` or `python -m harness.node.replica ...`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Sequence

from harness.node.http_server import HttpServer, bound_address, serve_until_signal
from harness.node.replica.app import MAX_BODY_BYTES, api_handler, bad_request
from harness.node.replica.config import Config, parse_config
from harness.node.replica.faults import FaultsFile
from harness.node.replica.metrics import metrics_handler
from harness.node.replica.rootkey import RootKeyError, default_root_key, load_root_key
from harness.node.replica.runtime import Runtime
from harness.node.serve import EXIT_BIND, BindError, bind, run_program, setup_logging

log = logging.getLogger("harness.node.replica")

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the replica until SIGTERM/SIGINT; return the process exit code."""
    config = parse_config(argv)
    setup_logging("replica", config.log_level)
    try:
        root_key = (
            default_root_key()
            if config.root_key_file is None
            else load_root_key(config.root_key_file)
        )
    except RootKeyError as exc:
        print(f"replica: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    faults_file = FaultsFile(config.faults_file)
    fail_at_start = faults_file.faults.fail_at_start
    if fail_at_start is not None:
        log.error(
            "fault fail_at_start in %s: exiting with %d before serving",
            config.faults_file,
            fail_at_start,
        )
        return fail_at_start
    runtime = Runtime(config, root_key, faults_file)
    try:
        listeners = [
            (
                HttpServer(api_handler(runtime), bad_request, MAX_BODY_BYTES),
                bind(config.http_listen, "api"),
            ),
            (
                HttpServer(metrics_handler(runtime.metrics, runtime.refresh), bad_request, 0),
                bind(config.metrics_listen, "metrics"),
            ),
        ]
    except BindError as exc:
        print(f"replica: error: {exc.strerror}", file=sys.stderr)
        return EXIT_BIND
    run_program(lambda: _serve(config, listeners, runtime))
    log.info("stopped")
    return 0


async def _serve(
    config: Config, listeners: list[tuple[HttpServer, socket.socket]], runtime: Runtime
) -> None:
    ticker = asyncio.create_task(runtime.tick_forever())
    log.info(
        "replica %s (node %s, subnet %s): API on %s, metrics on %s, healthy after %gs",
        config.replica_version,
        config.node_id,
        config.subnet_id,
        bound_address(listeners[0][1]),
        bound_address(listeners[1][1]),
        config.warmup_seconds,
    )
    try:
        await serve_until_signal(listeners, config.graceful_timeout)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


if __name__ == "__main__":
    sys.exit(main())
