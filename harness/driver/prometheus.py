"""A real Prometheus beside a testnet (`InternetComputer.with_prometheus()`, `harness up
--prometheus`): Debian's `prometheus` server, scraping every metrics endpoint the nodes serve,
as the IC's `PrometheusVm` does for its testnets.

One scrape job per node program (`replica` :9090, `orchestrator` :9091, `ic-gateway` :9325,
`ic-boundary` :9324), each fed by file-based service discovery: a JSON file of its own in
`<testnet dir>/prometheus/`, rewritten atomically (a temporary file, then a rename) from the
testnet's latest registry version whenever it changes (`Testnet._changed`), so the targets
follow the nodes' roles. Every target carries the labels `testnet`, `node`, `subnet` (empty,
so absent in Prometheus, for nodes in none) and `role` (`replica`, `unassigned`,
`api_boundary`, as `Testnet.describe()` says), besides `job` and `instance`. Scrapes every 1 s;
note that Prometheus hands discovery updates to its scrapers on a fixed 5 s ticker, so a new
target is scraped some seconds after its file changed.

The server is a child process in a session (and process group) of its own, tagged with the
run and the testnet in its environment as node processes are (`Run.run_tags`), so teardown,
`harness down` and the sweep of dead runs stop it like anything else of the testnet. It listens
on a loopback address the backend gives it (`PrometheusBeside`), port 9090; its log is
`prometheus.log` in the testnet's directory, its data under `prometheus/data`. Only the local
backend can have one for now: the docker and swarm backends raise `CapabilityMissing`.

The binary is `prometheus` on PATH (Debian's package `prometheus`: `scripts/install-test-tools`
installs it as root), or what `HARNESS_PROMETHEUS` names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.driver.backends.base import Backend
from harness.driver.backends.capabilities import PrometheusBeside
from harness.driver.errors import CapabilityMissing, HarnessError
from harness.driver.run import TESTNET_ID_ENV, Run

BINARY_ENV = "HARNESS_PROMETHEUS"
PORT = 9090
JOBS = ("replica", "orchestrator", "ic-gateway", "ic-boundary")
"""The scrape jobs, one per node program that serves metrics (`testnet.METRICS_FILES`)."""
SCRAPE_INTERVAL = "1s"
REFRESH_INTERVAL = "1s"  # file_sd's fallback re-read; inotify normally sees a change at once
RETENTION = "1d"
READY_TIMEOUT = 30.0
STOP_GRACE = 5.0
LOG_FILE = "prometheus.log"
DIRECTORY = "prometheus"
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ScrapeTarget:
    """One metrics endpoint of one node: its job (program), where the harness reaches it and
    the node's labels."""

    job: str
    host: str
    port: int
    node: str
    subnet: str  # "" for a node in no subnet
    role: str  # replica, unassigned, api_boundary

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def require_support(backend: type[Backend]) -> None:
    """`CapabilityMissing` unless a Prometheus can run beside testnets of `backend`."""
    if not issubclass(backend, PrometheusBeside):
        raise CapabilityMissing(
            "a Prometheus beside a testnet (with_prometheus(), harness up --prometheus) is only "
            f"on the local backend for now, not on the {backend.name} backend"
        )


class Prometheus:
    """The testnet's Prometheus: `start()`, `update(targets)` as they change, `stop()`."""

    def __init__(
        self,
        run: Run,
        testnet_id: str,
        directory: Path,
        host: str,
        port: int = PORT,
        binary: str | None = None,
    ) -> None:
        """`directory` is the testnet's: `prometheus.log` goes there, the config, the targets'
        files and the data under `prometheus/`. `binary`: default `$HARNESS_PROMETHEUS` or
        `prometheus` on PATH."""
        self.run = run
        self.testnet_id = testnet_id
        self.host = host
        self.port = port
        self.binary = binary or os.environ.get(BINARY_ENV) or "prometheus"
        self.log_path = directory / LOG_FILE
        self.directory = directory / DIRECTORY
        self.config_path = self.directory / "prometheus.yml"
        self._written: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def targets_file(self, job: str) -> Path:
        return self.directory / f"targets-{job}.json"

    def files(self) -> list[Path]:
        """What there is to keep of it (the artifacts): its log, config and targets' files."""
        candidates = [self.log_path, self.config_path, *map(self.targets_file, JOBS)]
        return [path for path in candidates if path.is_file()]

    def config(self) -> dict[str, object]:
        """The configuration (JSON, which is YAML): a job per program, each on its file."""
        return {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
            "scrape_configs": [
                {
                    "job_name": job,
                    "file_sd_configs": [
                        {
                            "files": [str(self.targets_file(job))],
                            "refresh_interval": REFRESH_INTERVAL,
                        }
                    ],
                }
                for job in JOBS
            ],
        }

    def start(self, timeout: float = READY_TIMEOUT) -> Prometheus:
        """Write the config and empty targets, start the server and wait until it is ready.
        `HarnessError` naming the problem (no binary, or not ready in time, with its log's
        tail); nothing is left running then."""
        path = shutil.which(self.binary)
        if path is None:
            raise HarnessError(
                f"Prometheus: no {self.binary!r} binary found (Debian's package prometheus; as "
                f"root, scripts/install-test-tools installs it, or point ${BINARY_ENV} at one)"
            )
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        _write_atomically(self.config_path, json.dumps(self.config(), indent=2))
        self.update([])
        argv = [
            path,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
        ]
        env = {**os.environ, **self.run.run_tags(), TESTNET_ID_ENV: self.testnet_id}
        with self.log_path.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise HarnessError(f"Prometheus: cannot start {path}: {exc}") from exc
        try:
            self._await_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise HarnessError(
                        f"Prometheus exited with status {code} before it was ready at "
                        f"{self.url}; the end of {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.url}/-/ready")
                    if response.status_code == 200:
                        return
                    last = f"/-/ready answered {response.status_code}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"Prometheus was not ready at {self.url} within {timeout:.0f} s "
                        f"({last}); the end of {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def update(self, targets: Iterable[ScrapeTarget]) -> None:
        """Make every job's file list exactly `targets` (those of other jobs are ignored),
        each file replaced atomically and only when it changes."""
        groups: dict[str, list[dict[str, object]]] = {job: [] for job in JOBS}
        for target in targets:
            if target.job in groups:
                groups[target.job].append(
                    {
                        "targets": [target.address],
                        "labels": {
                            "testnet": self.testnet_id,
                            "node": target.node,
                            "subnet": target.subnet,
                            "role": target.role,
                        },
                    }
                )
        for job, group in groups.items():
            text = json.dumps(group, indent=2)
            if self._written.get(job) != text:
                _write_atomically(self.targets_file(job), text)
                self._written[job] = text

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL to its process group after `grace`; safe to call twice."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self._process = None

    def collect(self, destination: Path) -> None:
        """Copy its log, config and targets' files into `destination`."""
        destination.mkdir(parents=True, exist_ok=True)
        for path in self.files():
            shutil.copyfile(path, destination / path.name)


def _write_atomically(path: Path, text: str) -> None:
    """Prometheus may read a file as it is being written: write a hidden file beside it (no
    job's file name) and rename it over the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    staging.replace(path)
