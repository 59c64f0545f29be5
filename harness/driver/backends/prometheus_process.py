"""The Prometheus server beside a local testnet (`capabilities.PrometheusBeside`; the
configuration, targets and readiness are `harness.driver.prometheus`'s): Debian's `prometheus`
binary as a child process in a session of its own, tagged with the run and the testnet in its
environment as node processes are (`Run.run_tags`), so teardown, `harness down` and the sweep of
dead runs stop it too. Its files (configuration, targets, data, and its log `prometheus.log`)
are in one directory of the testnet.

The binary is `prometheus` on PATH (Debian's package `prometheus`: `scripts/install-test-tools`
installs it as root), or what `HARNESS_PROMETHEUS` names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from harness.driver.errors import HarnessError
from harness.driver.run import TESTNET_ID_ENV, Run

BINARY_ENV = "HARNESS_PROMETHEUS"
PORT = 9090
LOG_FILE = "prometheus.log"


class ProcessServer:
    """Prometheus as a child process listening on `host`."""

    def __init__(
        self, run: Run, testnet_id: str, directory: Path, host: str, binary: str | None = None
    ) -> None:
        """`binary`: default `$HARNESS_PROMETHEUS` or `prometheus` on PATH."""
        self.run = run
        self.testnet_id = testnet_id
        self.directory = directory
        self.host = host
        self.binary = binary or os.environ.get(BINARY_ENV) or "prometheus"
        self.listen = f"{host}:{PORT}"
        self._process: subprocess.Popen[bytes] | None = None

    def path(self, local: Path) -> str:
        return str(local)

    def start(self, arguments: list[str]) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise HarnessError(
                f"Prometheus: no {self.binary!r} binary found (Debian's package prometheus; as "
                f"root, scripts/install-test-tools installs it, or point ${BINARY_ENV} at one)"
            )
        env = {**os.environ, **self.run.run_tags(), TESTNET_ID_ENV: self.testnet_id}
        with (self.directory / LOG_FILE).open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    [path, *arguments],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise HarnessError(f"Prometheus: cannot start {path}: {exc}") from exc
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{PORT}"

    def exit_status(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL to its process group after `grace`, and reaped, even when the
        wait is interrupted (Ctrl-C); safe to call twice."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(grace)
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            self._process = None
