"""A running testnet: started from a topology on a backend, inspected and changed by tests, its
artifacts collected, and torn down so that nothing is left."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from harness.driver.backend_registry import get_backend
from harness.driver.backends.base import Backend, BackendOptions
from harness.driver.backends.capabilities import PrometheusBeside, Stoppable
from harness.driver.claims import Claims
from harness.driver.errors import (
    HarnessError,
    LogCheckFailed,
    MetricCheckFailed,
    MetricsScrapeError,
    NodeNotReady,
)
from harness.driver.faults import Fault, FaultTarget, fault_document, fault_from_document
from harness.driver.holds import HoldWatch, release_hold, take_hold
from harness.driver.http import plain_client
from harness.driver.lifetime import expires, renew
from harness.driver.logcheck import LogKey, LogMarks, LogPatterns, LogScan, scan
from harness.driver.metrics_check import (
    Baseline,
    MetricThresholds,
    Reference,
    counters,
    offenders,
    parse_metrics,
)
from harness.driver.metrics_check import Sample as MetricSample
from harness.driver.node import Node
from harness.driver.parallel import Workers
from harness.driver.prometheus import DIRECTORY as PROMETHEUS_DIRECTORY
from harness.driver.prometheus import Prometheus, ScrapeTarget, require_support
from harness.driver.registry import RegistryWriter, initial_snapshot
from harness.driver.run import Run
from harness.driver.sampler import SCRAPE_TIMEOUT, Sample, Sampler, Target
from harness.driver.services import services_on
from harness.driver.timeline import Journal
from harness.driver.topology import (
    InternetComputer,
    Plan,
    topology_document,
    topology_from_document,
)
from harness.driver.waits import wait_until
from harness.node.description import Program, Role, Serves, role_of
from harness.node.registry import RegistrySnapshot, SubnetType

if TYPE_CHECKING:
    from harness.driver.aio import AsyncTestnet

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

RECORD_FILE = "testnet.json"
"""A live testnet's record in its directory: `describe()` and its state, for `harness ls`."""
EVENTS_FILE = "events.jsonl"
FAULTS_FILE = "faults.json"
"""The faults in force (`Testnet.inject`), for a session that attaches to the testnet later."""
FRESH_FILE = "fresh-counters.json"
"""The counters of the testnet just started, which a reset testnet's counters count from."""
"""The driver's events (`Testnet.journal`), in the testnet's directory and its artifacts."""
TESTNET_IDS = Claims("testnets")
_numbers: dict[str, Iterator[int]] = defaultdict(itertools.count)
ARTIFACT_SCRAPE_TIMEOUT = 2.0
WORKERS = 16  # threads for what is done on every node at once
SCRAPE_WAIT = 15.0
"""How long a reset (or a start) waits for a metrics endpoint to answer: room for a starved
machine, where one scrape may find no answer for seconds."""
SCRAPE_ATTEMPT = 3.0
"""One scrape's own time limit within `SCRAPE_WAIT`: a connection that gets no answer is given
up (and closed) and the next attempt opens another, so one stuck connection is not the end."""


def claim_testnet_id(name: str, run_id: str) -> str:
    """`<name>-<n>` with the lowest n this process has not used yet and no live run holds, so
    that `harness ls`, `logs` and `down` can name testnets of every run on the machine."""
    numbers = _numbers[name]
    while True:
        testnet_id = f"{name}-{next(numbers)}"
        if TESTNET_IDS.claim(testnet_id, run_id):
            return testnet_id


@dataclass(frozen=True)
class SubnetView:
    """A subnet as the latest registry version has it."""

    subnet_id: str
    subnet_type: SubnetType
    replica_version: str
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class TopologySnapshot:
    """The testnet's topology at one registry version (like the IC's `topology_snapshot()`)."""

    registry_version: int
    subnets: tuple[SubnetView, ...]
    unassigned_nodes: tuple[Node, ...]
    api_boundary_nodes: tuple[Node, ...]

    def subnet(self, subnet_id: str) -> SubnetView:
        for subnet in self.subnets:
            if subnet.subnet_id == subnet_id:
                return subnet
        raise HarnessError(f"no subnet {subnet_id!r} at registry version {self.registry_version}")

    def subnets_of_type(self, subnet_type: SubnetType) -> list[SubnetView]:
        return [s for s in self.subnets if s.subnet_type == subnet_type]

    def root_subnet(self) -> SubnetView:
        systems = self.subnets_of_type(SubnetType.SYSTEM)
        if not systems:
            raise HarnessError("the testnet has no system subnet")
        return systems[0]

    def all_nodes(self) -> list[Node]:
        nodes = [n for s in self.subnets for n in s.nodes]
        return nodes + list(self.unassigned_nodes) + list(self.api_boundary_nodes)


class Testnet:
    """A testnet of real nodes on a backend. Use as a context manager or call `close()`."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        topology: InternetComputer,
        run: Run,
        backend: str | type[Backend] = "local",
        options: BackendOptions | None = None,
        sample: bool = False,
        *,
        testnet_id: str | None = None,
    ) -> None:
        """`backend` names a registered backend (`harness.driver.backend_names()`) or is a
        `Backend` class (a fake one, in the harness's own tests). With `sample`, the nodes'
        key metrics are sampled while the testnet is up (`sampler`), for tests' reports.
        `testnet_id` is that of a running testnet of `run` to attach to (`attach()`)."""
        self.topology = topology
        self.plan: Plan = topology.plan()  # validates before anything starts
        self.run = run
        self.attached = testnet_id is not None
        self.testnet_id = testnet_id or claim_testnet_id(self.plan.name, run.run_id)
        try:
            self.directory = run.directory / self.testnet_id
            self.directory.mkdir(parents=True, exist_ok=self.attached)
            self.journal = Journal(self.directory / EVENTS_FILE)
            self.registry = RegistryWriter(self.directory / "registry", on_change=self._changed)
            backend_type = get_backend(backend) if isinstance(backend, str) else backend
            if self.plan.prometheus:
                require_support(backend_type)
            options = dataclasses.replace(
                options or BackendOptions(), binaries=dict(self.plan.binaries)
            )
            self.backend: Backend = backend_type(
                run,
                self.testnet_id,
                self.directory / "nodes",
                options.sized_for(len(self.plan.nodes)),
            )
        except BaseException:
            if not self.attached:
                TESTNET_IDS.release(self.testnet_id)
            raise
        self.http = plain_client()
        self.sampler = Sampler(self._sample_targets, self.journal) if sample else None
        self._nodes: dict[str, Node] = {}
        self._active: list[Fault] = []
        self._state = "starting"
        self._closed = False
        self._prometheus: Prometheus | None = None
        self._prometheus_lock = threading.Lock()
        # For what is done on every node at once (health, resets, scrapes, log marks): threads
        # kept for the testnet's life, so that a reset does not start a dozen threads.
        self._workers = Workers(WORKERS, self.testnet_id)
        self.baseline: Baseline = {}
        """The nodes' metrics at the last `reset()`: the metric checks count from there."""
        self._fresh: dict[tuple[str, int], dict[str, float]] = {}
        self.recorded_metrics: Path | None = None
        """A Prometheus TSDB (of a test's artifacts) that the testnet's Prometheus starts with
        and serves beside what it scrapes (`harness.driver.replay`); set before `start()`."""
        self._hold = HoldWatch(self.directory)

    @classmethod
    def attach(
        cls,
        run: Run,
        testnet_id: str,
        record: Mapping[str, Any],
        sample: bool = False,
        purpose: str = "a process",
    ) -> Testnet:
        """The running testnet `testnet_id` of `run` (started by another process, which may be
        gone), taken over from its `record` (`testnet.json`) and directory: its nodes, registry,
        faults in force and Prometheus (`harness.driver.testnets.attach` finds them by id).
        This process holds it (`harness.driver.holds`, `purpose` says who for `harness ls`)
        until `close()`, which lets go of it and leaves it up."""
        take_hold(run.directory / testnet_id, testnet_id, purpose)
        try:
            until = expires(run.directory / testnet_id)
            if until is not None and until <= time.time():
                raise HarnessError(f"testnet {testnet_id} has expired: its reaper removes it")
            try:
                topology = topology_from_document(record["topology"])
                options = BackendOptions(**record["options"])
                backend = str(record["backend"])
            except (KeyError, TypeError, HarnessError) as exc:
                raise HarnessError(
                    f"testnet {testnet_id} cannot be attached to: its record has no usable "
                    f"topology ({exc}); was it started by an older harness?"
                ) from None
            testnet = cls(topology, run, backend, options, sample, testnet_id=testnet_id)
        except BaseException:
            release_hold(run.directory / testnet_id)
            raise
        try:
            testnet._take_over(record)
        except BaseException:
            testnet.close()
            raise
        return testnet

    def _take_over(self, record: Mapping[str, Any]) -> None:
        first = self.registry.store.read(1)
        ips = {node_id: node.ip for node_id, node in first.nodes.items()}
        self.backend.attach(self.plan, ips, self.registry.path, record.get("backend_state") or {})
        self.http.close()
        self.http = self.backend.http_client()
        for planned in self.plan.nodes:
            self._nodes[planned.node_id] = Node(
                self, planned.node_id, ips[planned.node_id], planned.domain
            )
        if self.plan.prometheus and record.get("prometheus"):
            directory = self.directory / PROMETHEUS_DIRECTORY
            self._prometheus = Prometheus.running(self.testnet_id, directory, record["prometheus"])
        self._active = self._load_faults()
        self._load_fresh_counters()
        if self.sampler is not None:
            self.sampler.start()
        self._state = "up"
        renew(self.directory)
        self.journal.record("attach", f"attached by pid {os.getpid()}")

    # Life cycle.
    def start(
        self,
        timeout: float = 60.0,
        progress: Progress | None = None,
        failure_artifacts: Path | None = None,
    ) -> Self:
        """Allocate addresses, write the initial registry, start every node, and wait until every
        node is healthy (cloud-engine nodes with ic-gateway also on port 80) and, with a
        Prometheus, until it has scraped every endpoint.

        When the start fails, everything is torn down; with `failure_artifacts`, every node's
        logs, the registry, the metrics and the error (what the wait last saw) are written there
        first (`collect_artifacts`), and the error's notes say where."""
        try:
            self.save()
            ips = self.backend.allocate(self.plan, self.registry.path)
            self.http.close()
            self.http = self.backend.http_client()
            self.registry.write_initial(initial_snapshot(self.plan, ips))
            for planned in self.plan.nodes:
                self._nodes[planned.node_id] = Node(
                    self, planned.node_id, ips[planned.node_id], planned.domain
                )
            if self.plan.prometheus:  # before the nodes start, so that it sees them come up
                self._start_prometheus()
            if self.sampler is not None:
                self.sampler.start()
            self._start_nodes(progress)
            self.await_all_healthy(timeout, progress)
            if self._prometheus is not None:  # its record covers the tests from their start
                self._prometheus.await_scraped(len(self._scrape_targets()))
                self.journal.record("prometheus", "Prometheus has scraped every endpoint")
            self._keep_fresh_counters()
            self._state = "up"
            self.save()
        except BaseException as failure:
            # Also after a time limit or an interrupt: what the start got to is the evidence.
            if failure_artifacts is not None and not isinstance(failure, SystemExit):
                self._failed_start_artifacts(failure, failure_artifacts)
            self.close()
            raise
        return self

    def _failed_start_artifacts(self, failure: BaseException, destination: Path) -> None:
        summary = [
            f"testnet: {self.testnet_id} ({self.backend.name} backend)",
            "outcome: the start failed",
            "",
            f"{type(failure).__name__}: {failure}",
        ]
        try:
            self.collect_artifacts(destination, summary)
        except Exception as exc:  # the start's own failure stays the one raised
            failure.add_note(f"collecting the artifacts of the failed start failed too: {exc!r}")
        else:
            failure.add_note(f"artifacts of the failed start: {destination.resolve()}")

    def _start_nodes(self, progress: Progress | None) -> None:
        """Start every node, `backend.parallel_starts` at a time (a docker node's start waits
        for its replica, ~2 s; in series that is most of a testnet's spin-up). On the first
        failure no further node is started and that failure is raised once the running
        starts are over; the caller tears down what did start."""
        total = len(self.plan.nodes)
        workers = max(1, min(self.backend.parallel_starts, total))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"start-{self.testnet_id}") as pool:
            futures = [
                pool.submit(self.backend.start_node, planned, self.registry.path)
                for planned in self.plan.nodes
            ]
            try:
                for done, future in enumerate(as_completed(futures), 1):
                    future.result()
                    if progress:
                        progress("starting nodes", done, total)
            finally:
                for future in futures:
                    future.cancel()  # those not started yet; the pool waits for the others

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every node and release its addresses and its id; safe to call twice. A testnet
        this process attached to (`attach()`) is left up: only this process lets go of it."""
        if self._closed:
            return
        self._closed = True
        if self.attached:
            self._detach()
            return
        try:
            if self.sampler is not None:
                self.sampler.stop()
            try:
                if self._prometheus is not None:
                    self._prometheus.stop()
            finally:
                self.backend.teardown()
        finally:
            self._stop_workers()
            self.http.close()
            (self.directory / RECORD_FILE).unlink(missing_ok=True)
            TESTNET_IDS.release(self.testnet_id)

    def _stop_workers(self) -> None:
        self._workers.stop()

    def _detach(self) -> None:
        try:
            if self.sampler is not None:
                self.sampler.stop()
            self.backend.detach()
            if self._state == "up":
                renew(self.directory)
                self.journal.record("attach", f"pid {os.getpid()} let go of it")
                self.save()
        finally:
            self._stop_workers()
            self.http.close()
            release_hold(self.directory)

    def refresh(self) -> None:
        """For the process that started the testnet, now and then (`harness up`): unless a
        session attached to it holds it now, take back what the last one changed (if one held
        it since) and rewrite the record (a restarted docker node has new host ports)."""
        given_back = self._hold.poll()
        if given_back is None:
            return
        if given_back:  # a session let go of it (or died)
            self.backend.take_back()
            self._active = self._load_faults()
        self.save()

    # The record `harness ls`, `logs` and `down` read.
    def save(self) -> None:
        """Write the testnet's record (`testnet.json` in its directory), atomically."""
        staging = self.directory / f".{RECORD_FILE}.{os.getpid()}"
        staging.write_text(json.dumps(self.record(), indent=2))
        staging.replace(self.directory / RECORD_FILE)

    def record(self) -> dict[str, object]:
        """The testnet's record: `describe()` once it is up, its state (`starting`, `up`), its
        run, and what a process that attaches to it (or brings it back from its artifacts)
        needs: its topology, its backend's options and state."""
        document: dict[str, object] = {
            "testnet": self.testnet_id,
            "backend": self.backend.name,
            "state": self._state,
            "run": self.run.run_id,
            # What a process that attaches to it (`attach()`) needs.
            "topology": topology_document(self.topology),
            "options": dataclasses.asdict(self.backend.options),
            "backend_state": self.backend.state(),
        }
        if self._state == "up":
            document.update(self.describe())
        return document

    def _changed(self, version: int, what: str) -> None:
        """After a registry change: journaled; roles, and with them the URLs, may have
        changed."""
        self.journal.record("registry", f"registry version {version}: {what}")
        if self._state == "up" and not self._closed:
            self.save()
        if self._prometheus is not None and not self._closed:
            self._update_prometheus()

    # The Prometheus beside the testnet (`InternetComputer.with_prometheus()`).
    @property
    def prometheus(self) -> str | None:
        """The URL of the testnet's Prometheus, or None without one."""
        return self._prometheus.url if self._prometheus is not None else None

    def _start_prometheus(self) -> None:
        backend = self.backend
        assert isinstance(backend, PrometheusBeside)  # `require_support` said so
        directory = self.directory / PROMETHEUS_DIRECTORY
        directory.mkdir(parents=True, exist_ok=True)
        prometheus = Prometheus(self.testnet_id, directory, backend.prometheus_server(directory))
        with self._prometheus_lock:
            self._prometheus = prometheus.start(
                self._scrape_targets(), recorded=self.recorded_metrics
            )
        self.journal.record("prometheus", f"Prometheus up at {prometheus.url}")

    def _update_prometheus(self) -> None:
        """Its targets from the latest registry version: every metrics endpoint served now."""
        with self._prometheus_lock:  # the latest version's targets are written last
            if self._prometheus is not None:
                self._prometheus.update(self._scrape_targets())

    def _scrape_targets(self) -> list[ScrapeTarget]:
        backend = self.backend
        assert isinstance(backend, PrometheusBeside)
        snapshot = self.registry.latest()
        targets = []
        for node_id, program, port in self.metrics_endpoints():
            host, reached = backend.scrape_address(node_id, port)
            subnet = snapshot.subnet_of(node_id) or ""
            job = program.scrape_job
            assert job is not None  # it serves metrics
            role = role_of(snapshot, node_id)
            targets.append(ScrapeTarget(job, host, reached, node_id, subnet, role))
        return targets

    def metric_samples(self, since: float, until: float) -> tuple[list[Sample], str]:
        """The key metrics over [since, until] (Unix times) for a report, and what sampled
        them: the Prometheus beside the testnet when it runs (what it cannot answer is said
        instead), else the harness's sampler (`Testnet(sample=True)`), else nothing."""
        if self._prometheus is not None:
            try:
                return self._prometheus.samples(since, until), f"Prometheus ({self.prometheus})"
            except HarnessError as exc:
                log.warning("the report's metrics cannot come from Prometheus: %s", exc)
                if self.sampler is None:
                    return [], f"nothing (Prometheus could not answer: {exc})"
                fallback = f"the harness's sampler (Prometheus could not answer: {exc})"
                return self.sampler.samples(since, until), fallback
        if self.sampler is not None:
            return self.sampler.samples(since, until), "the harness's sampler"
        return [], "nothing (no sampler, no Prometheus)"

    @property
    def aio(self) -> AsyncTestnet:
        """The testnet's async face: every node at once (health, load through the gateways)."""
        from harness.driver.aio import AsyncTestnet

        return AsyncTestnet(self)

    # Faults (`harness.driver.faults`). Those in force are undone by `heal_all()`, which the
    # pytest plugin runs after every test.
    def inject(self, fault: Fault, timeout: float = 60.0) -> int | None:
        """Apply `fault` and, if it lasts, keep it in force until healed; return the pid it
        acted on, where it acted on a process. A fault already in force is not applied twice.
        One that stops the node first undoes the node's faults that a restart would end anyway.
        `CapabilityMissing` when the backend cannot do it here."""
        target = self._fault_target(fault)
        if fault.lasting and fault in self._active:
            return None
        if fault.stops_node:
            for earlier in reversed(self.active_faults(fault.node_id)):
                if not earlier.survives_restart:
                    self._undo(earlier, timeout)
        # Journaled at the moment it is applied: what it causes (a program's exit, seen by its
        # orchestrator) can be journaled before `apply` returns.
        applied_at = self.journal.clock()
        result = fault.apply(target)
        level = "warning" if fault.lasting else "info"
        self.journal.record(
            "fault", f"{fault} injected", fault.node_id, fault.program, level, at=applied_at
        )
        if fault.lasting:
            self._active.append(fault)
            self._save_faults()
        return result

    def _load_faults(self) -> list[Fault]:
        try:
            faults = json.loads((self.directory / FAULTS_FILE).read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise HarnessError(f"{self.directory / FAULTS_FILE}: not JSON: {exc}") from None
        return [fault_from_document(document) for document in faults]

    def _save_faults(self) -> None:
        """Keep the faults in force in the testnet's directory (`attach()` reads them)."""
        staging = self.directory / f".{FAULTS_FILE}.{os.getpid()}"
        staging.write_text(json.dumps([fault_document(fault) for fault in self._active]))
        staging.replace(self.directory / FAULTS_FILE)

    def heal(self, kind: type[Fault], node_id: str, timeout: float = 60.0) -> list[Fault]:
        """Undo the faults of `kind` in force on the node, the latest first; return them."""
        found = [f for f in self.active_faults(node_id) if isinstance(f, kind)]
        for fault in reversed(found):
            self._undo(fault, timeout)
        return found

    def active_faults(self, node_id: str | None = None) -> list[Fault]:
        """The faults in force (on one node), in the order they were applied."""
        return [f for f in self._active if node_id is None or f.node_id == node_id]

    def heal_all(self, timeout: float = 60.0) -> list[Fault]:
        """Undo every fault in force, the latest first, and wait until those nodes are
        healthy; return what was healed."""
        healed = list(self._active)
        for fault in reversed(healed):
            self._undo(fault, timeout)
        for node_id in dict.fromkeys(f.node_id for f in healed if not f.stops_node):
            self.await_node_healthy(node_id, timeout)
        return healed

    def _undo(self, fault: Fault, timeout: float) -> None:
        fault.undo(self._fault_target(fault))
        self._active.remove(fault)
        self._save_faults()
        self.journal.record("heal", f"{fault} healed", fault.node_id, fault.program)
        if fault.stops_node:  # undone: the node was started anew
            self.await_node_healthy(fault.node_id, timeout)

    def _fault_target(self, fault: Fault) -> FaultTarget:
        self.node(fault.node_id)  # an unknown node is an error naming the known ones
        planned = next(n for n in self.plan.nodes if n.node_id == fault.node_id)
        return FaultTarget(self.backend, planned, self.registry.path)

    def await_node_healthy(self, node_id: str, timeout: float = 60.0) -> None:
        """Ready as its role says (`Node.await_ready`): every endpoint with a readiness check
        of every program it runs now."""
        self.node(node_id).await_ready(timeout)

    # What a node needs of its testnet (`NodeHost`).
    def snapshot(self) -> RegistrySnapshot:
        """The latest registry version."""
        return self.registry.latest()

    def endpoint(self, node_id: str, port: int) -> tuple[str, int]:
        """Where the harness reaches `port` of the node (host, port)."""
        return self.backend.endpoint(node_id, port)

    # Topology.
    def node(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise HarnessError(f"no node {node_id!r}; nodes: {sorted(self._nodes)}") from None

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def topology_snapshot(self) -> TopologySnapshot:
        snapshot = self.registry.latest()
        subnets = tuple(
            SubnetView(
                sid, s.subnet_type, s.replica_version, tuple(self.node(m) for m in s.members)
            )
            for sid, s in snapshot.subnets.items()
        )
        assigned = {m for s in snapshot.subnets.values() for m in s.members}
        boundary = tuple(self.node(n) for n in snapshot.api_boundary_nodes)
        unassigned = tuple(
            n
            for nid, n in self._nodes.items()
            if nid not in assigned and nid not in snapshot.api_boundary_nodes
        )
        return TopologySnapshot(snapshot.version, subnets, unassigned, boundary)

    # Waits.
    def await_all_healthy(self, timeout: float = 60.0, progress: Progress | None = None) -> None:
        """Wait until every node is ready as its role says (`Node.await_ready`): assigned ones,
        API boundary ones and unassigned ones alike, every node at once (up to 16 waits at a
        time), the first that does not make it in time raised."""
        deadline = time.monotonic() + timeout
        nodes = self.nodes()

        def ready(node: Node) -> None:
            node.await_ready(max(0.1, deadline - time.monotonic()))

        def report(done: int) -> None:
            if progress:
                progress("waiting for healthy nodes", done, len(nodes))

        self._workers.map(ready, nodes, report)

    def write_registry(self, content: RegistrySnapshot, what: str, timeout: float = 60.0) -> int:
        """Write `content` as the registry's next version and wait until every orchestrator
        has read it and every node is healthy as it says; return the version."""
        version = self.registry.mutate(lambda _: content, what)
        self._settle(version, timeout)
        return version

    def _settle(self, version: int, timeout: float) -> None:
        """Every orchestrator has read registry `version` and reset (`POST /reset`), and every
        node is healthy."""
        deadline = time.monotonic() + timeout
        self._reset_orchestrators(version, timeout)
        self.await_all_healthy(max(0.1, deadline - time.monotonic()))

    # Reset: a reused testnet (attached, or of a fixture wider than a test) before each test.
    def reset(self, timeout: float = 60.0) -> float:
        """Put the testnet back in the state it was started in; return the seconds it took.

        The faults in force are healed and every node that is not running is started; the
        registry's content is that of its first version again, written as a new version when
        it differs (versions only grow); every orchestrator has acted on it and forgets its
        programs' crash-loop backoffs (`POST /reset` on its dashboard: what was backing off
        starts at once); every node is healthy; and counters count from here (`baseline`: a
        counter reads as its value on the fresh testnet plus its increase since the reset)."""
        started = time.monotonic()
        deadline = started + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        renew(self.directory)  # a testnet in use lives on
        healed = self.heal_all(timeout)
        woken = self._start_stopped_nodes()
        version, rewritten = self.registry.restore(1, "reset to the content of version 1")
        self._settle(version, left())
        self.baseline = self._scrape_baseline()
        took = time.monotonic() - started
        done = [f"{len(healed)} fault(s) healed" if healed else "no fault in force"]
        if woken:
            done.append(f"{', '.join(woken)} started")
        done.append(f"registry version {version} written" if rewritten else "registry unchanged")
        self.journal.record("reset", f"reset in {took:.2f} s: {', '.join(done)}")
        return took

    def _start_stopped_nodes(self) -> list[str]:
        """Start every node that is not running (stopped by a session that died, say)."""
        backend = self.backend
        if not isinstance(backend, Stoppable):
            return []
        stopped = [n for n in self.plan.nodes if not backend.node_running(n.node_id)]
        for planned in stopped:
            backend.start_node(planned, self.registry.path)
            self.journal.record(
                "reset", f"{planned.node_id} was not running: started", planned.node_id
            )
        return [planned.node_id for planned in stopped]

    def _reset_orchestrators(self, version: int, timeout: float) -> None:
        """`POST /reset` to every orchestrator, again until its answer (its dashboard after the
        reset's pass) says it has read registry `version`."""

        def reset(node: Node) -> None:
            def done() -> bool | None:
                seen = node.reset(timeout).get("last registry version", "0")
                return True if int(seen) >= version else None

            wait_until(done, f"the reset of {node.node_id}'s orchestrator", timeout, 0.02)

        self._workers.map(reset, self.nodes())

    def _scrape_baseline(self) -> Baseline:
        """The `Reference` of every metrics endpoint the nodes serve, scraped now."""
        return {
            endpoint: Reference.of(samples, self._fresh.get(endpoint, {}))
            for endpoint, samples in self._scrape_all().items()
        }

    def _scrape_all(self, strict: bool = True) -> dict[tuple[str, int], list[MetricSample]]:
        """Every metrics endpoint the nodes serve, scraped now (one that does not answer yet,
        a program just started say, is waited for a little), by (node id, port). Without
        `strict`, one that never answers is left out (and said) instead of raised."""
        endpoints = [(self.node(node_id), port) for node_id, _, port in self.metrics_endpoints()]

        def scrape(endpoint: tuple[Node, int]) -> list[MetricSample] | None:
            node, port = endpoint
            where = f"{node.node_id}:{port}"
            try:
                text = wait_until(
                    lambda: node.metrics_text(port, SCRAPE_ATTEMPT),
                    f"the metrics of {where}",
                    SCRAPE_WAIT,
                )
            except NodeNotReady as exc:
                if strict:
                    raise
                log.warning("%s", exc)
                return None
            return parse_metrics(text, where)

        scraped = self._workers.map(scrape, endpoints)
        return {
            (node.node_id, port): samples
            for (node, port), samples in zip(endpoints, scraped, strict=True)
            if samples is not None
        }

    def _keep_fresh_counters(self) -> None:
        """The counters of the testnet just started: what a reset testnet's counters count
        from (`reset`), kept in its directory for sessions that attach to it. An endpoint that
        cannot be read is left out: its counters then count from 0 at a reset."""
        scraped = self._scrape_all(strict=False)
        self._fresh = {key: counters(samples) for key, samples in scraped.items()}
        document = {f"{node} {port}": values for (node, port), values in self._fresh.items()}
        (self.directory / FRESH_FILE).write_text(json.dumps(document))

    def _load_fresh_counters(self) -> None:
        try:
            document = json.loads((self.directory / FRESH_FILE).read_text())
        except (OSError, ValueError):
            return  # started by an older harness: counters count from 0 at a reset
        for key, values in document.items():
            node, _, port = key.rpartition(" ")
            self._fresh[(node, int(port))] = values

    # Metric checks.
    def check_metrics(self, thresholds: MetricThresholds | None = None) -> None:
        """Check every node of every subnet against `thresholds` (default: the programs'
        descriptions', the IC's defaults for the replica and the orchestrator), each program it
        runs now;
        raise `MetricCheckFailed` listing every offender. A failed scrape is an offender. After
        a `reset()`, a counter is checked as on a fresh testnet: its value when the testnet was
        fresh plus its increase since the reset (`Node.metrics`)."""
        thresholds = thresholds or MetricThresholds.defaults()
        thresholds.validate()
        problems: list[str] = []
        for subnet in self.topology_snapshot().subnets:
            for node in subnet.nodes:
                for service in node.services():  # the programs it runs now
                    limits = thresholds.programs.get(service.program.name)
                    if service.serves is not Serves.METRICS or not limits:
                        continue
                    try:
                        samples = node.metrics(service.port)
                    except MetricsScrapeError as exc:
                        problems.append(f"Could not check metrics of node {node.node_id}: {exc}")
                        continue
                    problems += offenders(node.node_id, samples, limits)
        if problems:
            self.journal.record(
                "check", f"metric checks failed: {len(problems)} offender(s)", level="error"
            )
            raise MetricCheckFailed(problems)
        self.journal.record("check", "metric checks passed")

    # Log checks (`harness.driver.logcheck`).
    def log_marks(self) -> LogMarks:
        """Where every node program's log stands now: a test's window in them starts here."""
        nodes = self.nodes()
        sizes = self._workers.map(lambda node: self.backend.log_sizes(node.node_id), nodes)
        return {
            (node.node_id, program): size
            for node, by_program in zip(nodes, sizes, strict=True)
            for program, size in by_program.items()
        }

    def logs(self) -> dict[LogKey, bytes]:
        """Every node program's log as it is now."""
        return {
            (node.node_id, program): content
            for node in self.nodes()
            for program, content in self.backend.read_logs(node.node_id).items()
        }

    def scan_logs(
        self,
        patterns: LogPatterns | None = None,
        since: LogMarks | None = None,
        logs: dict[LogKey, bytes] | None = None,
        tail: int = 0,
    ) -> LogScan:
        """Scan the node programs' log lines written since `since` (`log_marks()`; default:
        every line) with `patterns` (default: `LogPatterns()`) and journal the verdict. `logs`
        are the logs to scan (default: read now; the pytest plugin passes those it collected);
        `tail` is how many last lines of each to keep."""
        result = scan(
            self.logs() if logs is None else logs, since or {}, patterns or LogPatterns(), tail
        )
        if result.findings:
            self.journal.record(
                "check",
                f"log checks failed: {len(result.findings)} forbidden line(s)",
                level="error",
            )
        else:
            self.journal.record("check", "log checks passed")
        return result

    def check_logs(
        self, patterns: LogPatterns | None = None, since: LogMarks | None = None
    ) -> None:
        """Raise `LogCheckFailed`, naming every line, when a node program logged a line
        `patterns` forbid (default: the IC's and Python's, `LogPatterns()`) since `since`."""
        findings = self.scan_logs(patterns, since).findings
        if findings:
            raise LogCheckFailed([str(finding) for finding in findings])

    # Artifacts.
    def collect_artifacts(self, destination: Path, summary: Iterable[str] = ()) -> Path:
        """Write every node's logs, every registry version, the metrics scraped now (every node
        at once, each scrape bounded), the topology as JSON and a summary into `destination`."""
        destination.mkdir(parents=True, exist_ok=True)
        (destination / "summary.txt").write_text("\n".join(summary) + "\n")
        journal = self.directory / EVENTS_FILE
        if journal.is_file():
            shutil.copyfile(journal, destination / EVENTS_FILE)
        if self.registry.store.latest_version():
            (destination / "topology.json").write_text(json.dumps(self.describe(), indent=2))
        # What `harness up --from` brings the testnet back from (`harness.driver.replay`).
        (destination / RECORD_FILE).write_text(json.dumps(self.record(), indent=2))
        registry_copy = destination / "registry"
        shutil.rmtree(registry_copy, ignore_errors=True)
        if self.registry.path.is_dir():
            shutil.copytree(self.registry.path, registry_copy)
        if self._prometheus is not None:
            self._prometheus.collect(destination / "prometheus")
        nodes = self.nodes()
        if nodes:
            with ThreadPoolExecutor(min(16, len(nodes)), thread_name_prefix="artifacts") as pool:
                list(pool.map(lambda node: self._node_artifacts(node, destination), nodes))
        return destination

    def _node_artifacts(self, node: Node, destination: Path) -> None:
        node_dir = destination / "nodes" / node.node_id
        self.backend.collect_logs(node.node_id, node_dir)
        for service in node.services():
            if service.serves is not Serves.METRICS:
                continue
            try:
                text = node.metrics_text(service.port, timeout=ARTIFACT_SCRAPE_TIMEOUT)
            except (MetricsScrapeError, HarnessError) as exc:
                text = f"# scrape failed: {exc}\n"
            (node_dir / f"metrics-{service.program.name}-{service.port}.txt").write_text(text)

    def metrics_endpoints(self) -> list[tuple[str, Program, int]]:
        """Every metrics endpoint the nodes serve now, by their roles in the latest registry
        version: (node id, program, port)."""
        snapshot = self.registry.latest()
        return [
            (node_id, service.program, service.port)
            for node_id in self._nodes
            for service in services_on(snapshot, node_id)
            if service.serves is Serves.METRICS
        ]

    def _sample_targets(self) -> list[Target]:
        """The metrics endpoints to sample now (none before the registry's first version)."""
        if self._closed or self.registry.store.latest_version() == 0:
            return []
        return [
            Target(
                node_id,
                program.name,
                functools.partial(self.node(node_id).metrics_text, port, SCRAPE_TIMEOUT),
            )
            for node_id, program, port in self.metrics_endpoints()
        ]

    def role(self, node_id: str) -> Role:
        """The node's role in the latest registry version: `replica` (in a subnet),
        `api_boundary` or `unassigned`, as `describe()` says."""
        return role_of(self.registry.latest(), node_id)

    def describe(self) -> dict[str, object]:
        """The testnet as one JSON-ready document: every node's id, role, subnet, type and the
        URLs of what it serves now (by its role in the latest registry version)."""
        snapshot = self.topology_snapshot()

        def node_doc(node: Node, subnet: SubnetView | None, role: Role) -> dict[str, object]:
            return {
                "id": node.node_id,
                "role": role,
                "subnet": subnet.subnet_id if subnet else None,
                "subnet_type": subnet.subnet_type.value if subnet else None,
                "address": node.ip,
                "domain": node.domain,
                "urls": {s.name: node.url(s.port) for s in node.services()},
            }

        nodes = [node_doc(n, s, Role.REPLICA) for s in snapshot.subnets for n in s.nodes]
        nodes += [node_doc(n, None, Role.UNASSIGNED) for n in snapshot.unassigned_nodes]
        nodes += [node_doc(n, None, Role.API_BOUNDARY) for n in snapshot.api_boundary_nodes]
        return {
            "testnet": self.testnet_id,
            "backend": self.backend.name,
            "registry_version": snapshot.registry_version,
            "registry": str(self.registry.path),
            # Where the URLs are reachable through (swarm: a SOCKS5 proxy on the overlay).
            "proxy": self.backend.http_proxy,
            "prometheus": self.prometheus,
            "nodes": nodes,
        }
