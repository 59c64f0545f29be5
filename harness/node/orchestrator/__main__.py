"""`orchestrator` / `python -m harness.node.orchestrator`: parse flags, run until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from harness.node.forkserver.server import fork_server_here
from harness.node.orchestrator.args import parse_args
from harness.node.orchestrator.launchers import ExecLauncher, ForkLauncher, Launcher
from harness.node.orchestrator.orchestrator import FatalError, Orchestrator
from harness.node.serve import run_program, setup_logging

log = logging.getLogger("harness.node.orchestrator")


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)  # exits 2 on bad flags
    setup_logging("orchestrator", config.log_level)
    exit_code = 0
    launcher: Launcher
    if config.spawn == "fork":
        # Now, while this process has no thread and no event loop: a fork is safe only then.
        title = f"harness forkserver of the orchestrator of {config.node_id}"
        server, server_pid = fork_server_here(title)
        launcher = ForkLauncher(server, title, config.stop_grace_period, server_pid)
    else:
        launcher = ExecLauncher(os.environ)

    async def run() -> None:
        nonlocal exit_code
        exit_code = await Orchestrator(config, launcher=launcher).run()

    try:
        run_program(run)
    except FatalError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
