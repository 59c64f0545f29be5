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

How the server runs is the backend's (`PrometheusBeside`): on the local backend a child process
on a loopback address of its own (`backends.prometheus_process`), on docker and swarm a
container of an image built offline from Debian's package, on the testnet's network
(`backends.prometheus_container`); either way teardown, `harness down` and the sweep of dead
runs stop it like anything else of the testnet. Its log (`prometheus.log`), config, targets'
files and data (`data/`) are in `<testnet dir>/prometheus/`.

Artifacts (`collect`) keep its log, config and targets, and a snapshot of its TSDB (the admin
API's, head included) as `data/`.

For a test's report, `samples()` asks it (`/api/v1/query_range`) for the series the harness's
own sampler keeps (`sampler.SERIES`), so a report plots what Prometheus scraped when it ran.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.driver.backends.base import Backend
from harness.driver.backends.capabilities import PrometheusBeside, PrometheusServer
from harness.driver.backends.prometheus_process import LOG_FILE
from harness.driver.errors import CapabilityMissing, HarnessError
from harness.driver.http import plain_client
from harness.driver.sampler import SERIES, UP_SERIES, Sample
from harness.driver.waits import GiveUp, wait_until
from harness.node.catalog import PROGRAMS

JOBS = tuple(job for program in PROGRAMS if (job := program.scrape_job) is not None)
"""The scrape jobs, one per node program that serves metrics (`Program.scrape_job`)."""
SCRAPE_INTERVAL = "1s"
REFRESH_INTERVAL = "1s"  # file_sd's fallback re-read; inotify normally sees a change at once
RETENTION = "1d"
RECORDED_RETENTION = "3650d"  # a TSDB brought back from artifacts keeps its old blocks
READY_TIMEOUT = 30.0
SCRAPED_TIMEOUT = 30.0
STOP_GRACE = 5.0
DIRECTORY = "prometheus"
LOG_TAIL_LINES = 20
QUERY_TIMEOUT = 10.0
MAX_POINTS = 2000  # per series in a report's plot (Prometheus answers at most 11000)


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
            "a Prometheus beside a testnet (with_prometheus(), harness up --prometheus) cannot "
            f"run on the {backend.name} backend"
        )


class Prometheus:
    """The testnet's Prometheus: `start(targets)`, `update(targets)` as they change, `stop()`.
    How the server runs is the backend's (`server`)."""

    def __init__(self, testnet_id: str, directory: Path, server: PrometheusServer) -> None:
        """`directory` holds the config, the targets' files, the data and `prometheus.log`."""
        self.testnet_id = testnet_id
        self.directory = directory
        self.server = server
        self.log_path = directory / LOG_FILE
        self.config_path = directory / "prometheus.yml"
        self._written: dict[str, str] = {}
        self._url: str | None = None
        self._running = False

    @classmethod
    def running(cls, testnet_id: str, directory: Path, url: str) -> Prometheus:
        """The Prometheus at `url` that another process started beside a testnet this one
        attached to: targets, samples and artifacts work; `stop()` leaves it running."""
        prometheus = cls(testnet_id, directory, _StartedElsewhere())
        prometheus._url = url
        prometheus._running = True
        return prometheus

    @property
    def url(self) -> str:
        if self._url is None:
            raise HarnessError("Prometheus has not been started")
        return self._url

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
                            "files": [self.server.path(self.targets_file(job))],
                            "refresh_interval": REFRESH_INTERVAL,
                        }
                    ],
                }
                for job in JOBS
            ],
        }

    def start(
        self,
        targets: Iterable[ScrapeTarget],
        timeout: float = READY_TIMEOUT,
        recorded: Path | None = None,
    ) -> Prometheus:
        """Write the config and `targets` (there from its first read: discovery updates come
        only every 5 s), start the server and wait until it is ready. With `recorded` (a TSDB
        of a test's artifacts: `collect`'s `data/`), its data starts as that TSDB, which it
        serves beside what it scrapes. `HarnessError` naming the problem (no binary, or not
        ready in time, with its log's tail); nothing is left running then."""
        if recorded is not None:
            shutil.copytree(recorded, self.directory / "data", dirs_exist_ok=True)
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        _write_atomically(self.config_path, json.dumps(self.config(), indent=2))
        self.update(targets)
        arguments = [
            f"--config.file={self.server.path(self.config_path)}",
            f"--storage.tsdb.path={self.server.path(self.directory / 'data')}",
            f"--storage.tsdb.retention.time={RECORDED_RETENTION if recorded else RETENTION}",
            f"--web.listen-address={self.server.listen}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",  # for the TSDB snapshots of `collect`
        ]
        try:
            url = self.server.start(arguments)
            self._await_ready(url, timeout)
        except BaseException:
            self.stop()
            raise
        self._url = url
        self._running = True
        return self

    def _await_ready(self, url: str, timeout: float) -> None:
        with plain_client(1.0) as client:

            def ready() -> bool:
                code = self.server.exit_status()
                if code is not None:
                    raise GiveUp(f"Prometheus exited with status {code} before it was ready")
                response = client.get(f"{url}/-/ready")
                if response.status_code != 200:
                    raise HarnessError(f"/-/ready answered {response.status_code}")
                return True

            self._wait(ready, f"Prometheus ready at {url}", timeout)

    def await_scraped(self, expected: int, timeout: float = SCRAPED_TIMEOUT) -> None:
        """Wait until it has `expected` active targets, each scraped at least once (up or
        down): Prometheus hands targets to its scrapers on a fixed 5 s ticker, its first
        scrapes come ~5-6 s after it started, and a testnet's record should cover its tests
        from their first second. `HarnessError` saying how far it got when it does not."""
        with plain_client(1.0) as client:

            def scraped() -> bool:
                response = client.get(f"{self.url}/api/v1/targets", params={"state": "active"})
                try:
                    active = response.json()["data"]["activeTargets"]
                except (ValueError, KeyError) as exc:
                    raise HarnessError(f"/api/v1/targets answered {exc!r}") from None
                done = [t for t in active if t.get("health") != "unknown"]
                if len(active) < expected or len(done) != len(active):
                    raise HarnessError(f"{len(active)} active targets, {len(done)} of them scraped")
                return True

            self._wait(
                scraped, f"Prometheus at {self.url} scraping its {expected} targets", timeout
            )

    def _wait(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """`wait_until(check)`; what ends it early or late says so with the end of the log."""
        try:
            wait_until(check, what, timeout, interval=0.1)
        except HarnessError as exc:
            raise HarnessError(f"{exc}; the end of {self.log_path}:\n{self.log_tail()}") from None

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
        """Stop the server (SIGTERM, SIGKILL after `grace`); safe to call twice."""
        self._running = False
        self.server.stop(grace)

    def collect(self, destination: Path) -> None:
        """Copy its log, config and targets' files into `destination`, and, while it runs, a
        snapshot of its TSDB as `data/` (what it scraped so far: `prometheus
        --storage.tsdb.path=<destination>/data` serves it again); when the snapshot cannot be
        taken, `data-unavailable.txt` says why."""
        destination.mkdir(parents=True, exist_ok=True)
        for path in self.files():
            shutil.copyfile(path, destination / path.name)
        if not self._running:
            return
        try:
            snapshot = self._snapshot()
        except HarnessError as exc:
            (destination / "data-unavailable.txt").write_text(f"{exc}\n")
            return
        try:
            shutil.copytree(snapshot, destination / "data", dirs_exist_ok=True)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def _snapshot(self) -> Path:
        """A snapshot of its TSDB, head included (the admin API), in its data directory."""
        try:
            response = httpx.post(
                f"{self.url}/api/v1/admin/tsdb/snapshot", trust_env=False, timeout=QUERY_TIMEOUT
            )
            response.raise_for_status()
            name = response.json()["data"]["name"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise HarnessError(f"Prometheus at {self.url}: no TSDB snapshot: {exc!r}") from exc
        path = self.directory / "data" / "snapshots" / str(name)
        if not path.is_dir():
            raise HarnessError(f"Prometheus made snapshot {name!r}, but {path} is no directory")
        return path

    def samples(self, since: float, until: float) -> list[Sample]:
        """The sampler's series (`sampler.SERIES`, and how many endpoints of each node were
        up) per node over [since, until] (Unix times), as Prometheus scraped them: a point a
        second, or `MAX_POINTS` over a longer test. `HarnessError` when it cannot answer."""
        step = max(1.0, (until - since) / MAX_POINTS)
        queries = {UP_SERIES: f"sum by (node) (up{{{self._selector}}})"}
        for _program, metric, series, aggregation in SERIES:
            queries[series] = f"{aggregation} by (node) ({metric}{{{self._selector}}})"
        found: list[Sample] = []
        with plain_client(QUERY_TIMEOUT) as client:
            for series, query in queries.items():
                params: dict[str, str | float] = {
                    "query": query,
                    "start": since,
                    "end": until,
                    "step": step,
                }
                try:
                    response = client.get(f"{self.url}/api/v1/query_range", params=params)
                    response.raise_for_status()
                    result = response.json()["data"]["result"]
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    raise HarnessError(f"Prometheus at {self.url}: {query}: {exc!r}") from exc
                for line in result:
                    node = line["metric"].get("node", "")
                    found += [Sample(float(t), node, series, float(v)) for t, v in line["values"]]
        return found

    @property
    def _selector(self) -> str:
        return f'testnet="{self.testnet_id}"'


class _StartedElsewhere:
    """The server of a Prometheus another process started: this one never stops it."""

    listen = ""

    def path(self, local: Path) -> str:
        return str(local)

    def start(self, arguments: list[str]) -> str:
        raise HarnessError("a Prometheus started elsewhere is not started again")

    def exit_status(self) -> int | None:
        return None

    def stop(self, grace: float) -> None:
        return None


def _write_atomically(path: Path, text: str) -> None:
    """Prometheus may read a file as it is being written: write a hidden file beside it (no
    job's file name) and rename it over the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    staging.replace(path)
