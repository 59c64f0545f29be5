"""Samples a testnet's key metrics while it runs, for the plots of a test's report: a thread
that scrapes every metrics endpoint the nodes serve now (what a Prometheus beside the testnet
would scrape) every `interval` seconds, keeps a few series per node, and notes in the
`Journal` when an endpoint stops or starts answering (a health transition).

Series, per node (`Sample.node`): ``up`` (how many of its metrics endpoints answered), and
those of the programs' descriptions (`Program.series` in `harness.node.catalog`: program
starts and restart backoff from the orchestrator, the requests of the replica, ic-gateway and
ic-boundary). Counters are kept as scraped; the report turns them into rates.

Only /metrics is asked for, never the nodes' APIs, so no counter a test looks at moves because
of the sampling. The interval grows with the number of endpoints (a scrape costs ~2 ms of
the harness's CPU), so a large testnet is sampled less often rather than more slowly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness.driver.errors import HarnessError, MetricsScrapeError
from harness.driver.metrics_check import Sample as MetricSample
from harness.driver.metrics_check import parse_metrics
from harness.driver.timeline import Journal
from harness.node.catalog import PROGRAMS

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 1.0
MIN_INTERVAL = 0.5
SECONDS_PER_ENDPOINT = 0.02


@dataclass(frozen=True)
class Target:
    """One metrics endpoint: the node, the program serving it, and how to scrape it."""

    node: str
    program: str
    scrape: Callable[[], str]


@dataclass(frozen=True)
class Sample:
    t: float
    node: str
    series: str
    value: float


UP_SERIES = "up"
SERIES: tuple[tuple[str, str, str, str], ...] = tuple(
    (program.name, s.metric, s.series, s.combine) for program in PROGRAMS for s in program.series
)
"""Which series a metric feeds, from the programs' descriptions (`Program.series`): (program,
metric, series, how a node's samples of it combine, named as the PromQL aggregation that does
the same, for `Prometheus.samples`)."""
_COMBINE: dict[str, Callable[[Iterable[float]], float]] = {"sum": sum, "max": max}


def interval_for(endpoints: int) -> float:
    return max(MIN_INTERVAL, endpoints * SECONDS_PER_ENDPOINT)


class Sampler:
    """Samples `targets()` (asked again each round: roles change) until `stop()`."""

    def __init__(
        self,
        targets: Callable[[], list[Target]],
        journal: Journal,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = targets
        self.journal = journal
        self.clock = clock
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._answering: dict[tuple[str, str], bool] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def samples(self, since: float = float("-inf"), until: float = float("inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if since <= s.t <= until]

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                targets = self.targets()
                self.sample_once(targets)
            except Exception:  # a bug here must not end the sampling silently
                log.exception("sampling the testnet's metrics failed")
                targets = []
            elapsed = time.monotonic() - started
            self._stopping.wait(max(0.0, interval_for(len(targets)) - elapsed))

    def sample_once(self, targets: list[Target]) -> None:
        """One round: scrape every target, record the series and any health transition."""
        t = self.clock()
        up: dict[str, int] = {}
        values: dict[tuple[str, str], float] = {}
        for target in targets:
            up.setdefault(target.node, 0)
            key = (target.node, target.program)
            try:
                samples = parse_metrics(target.scrape(), f"{target.node} {target.program}")
            except (MetricsScrapeError, HarnessError) as exc:
                self._health(key, False, str(exc))
                continue
            self._health(key, True, "")
            up[target.node] += 1
            for program, name, series, combine in SERIES:
                found = _values(samples, name) if program == target.program else []
                if found:
                    values[(target.node, series)] = _COMBINE[combine](found)
        with self._lock:
            self._samples += [Sample(t, node, UP_SERIES, count) for node, count in up.items()]
            self._samples += [
                Sample(t, node, series, value) for (node, series), value in values.items()
            ]

    def _health(self, key: tuple[str, str], answering: bool, why: str) -> None:
        before = self._answering.get(key)
        if before is None and not answering:
            return  # not up yet: a program starting is no transition
        self._answering[key] = answering
        node, program = key
        if before is None or before == answering:
            return  # the first sight of an answering endpoint is none either
        if answering:
            self.journal.record("health", f"{program} metrics answering again", node, program)
        else:
            self.journal.record(
                "health", f"{program} metrics not answering: {why}", node, program, "warning"
            )


def _values(samples: list[MetricSample], name: str) -> list[float]:
    return [s.value for s in samples if s.name == name]
