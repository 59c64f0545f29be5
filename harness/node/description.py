"""What a node program is, written down once: `Program`, the one description every other part
reads (the orchestrator's supervision and policy, the fork servers, the driver's URLs, health
waits, metric checks, Prometheus targets, logs and reports).

A description holds how the program starts (a Python entry point to fork, or a command to
exec), the ports it serves and what each serves (`Endpoint`: the IC's API, metrics, or a health
path), the Host it answers to, its Prometheus job, the series reports plot and the thresholds
its metrics are checked against, when it runs (`RunsOn`: node roles, subnet types, a launch
gate, a domain), its flags and environment from the registry (an orchestrator `Process`, or
templates), the Debian packages it needs in a node image, and its supervision (stop grace
period, backoff). `Program.__post_init__` refuses a description with a missing or
contradictory piece, naming it: at import, never as a timeout later.

Stdlib only, with the registry's records: the driver imports it without pulling in a node
program.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.node.registry.records import KNOWN_FEATURES, RegistrySnapshot, SubnetType


class DescriptionError(ValueError):
    """A program description that cannot work, naming the program and what is wrong."""


class Role(enum.StrEnum):
    """What the latest registry version makes of a node (as `describe()` spells it)."""

    REPLICA = "replica"  # a member of a subnet
    API_BOUNDARY = "api_boundary"  # an API boundary node
    UNASSIGNED = "unassigned"  # neither


EVERY_ROLE = frozenset(Role)
SUPERVISED_ROLES = (frozenset({Role.REPLICA}), frozenset({Role.API_BOUNDARY}))
"""The roles a program the orchestrator runs may have: one record drives it (the subnet's, or
the API boundary node's)."""


class Serves(enum.StrEnum):
    """What a port of a program serves, and so how the harness uses it."""

    API = "api"  # the IC's HTTP API: ready when /api/v2/status says healthy
    METRICS = "metrics"  # Prometheus' text format: scraped, sampled, checked, saved
    HEALTH = "health"  # ready when a GET of the endpoint's `path` answers 2xx


class Host(enum.Enum):
    """A Host header that is not a fixed name."""

    NODE_DOMAIN = "the node's domain"  # from the node's registry record (ic-boundary)


@dataclass(frozen=True)
class Endpoint:
    """One port of a program: its name among the node's URLs (`describe()`), the port, what
    it serves, the Host it answers to (None: any) and, for `HEALTH`, the path that answers.
    A program's metrics (`/metrics`) may be served on the port of its API or health."""

    name: str
    port: int
    serves: Serves
    host: str | Host | None = None
    path: str = "/"


@dataclass(frozen=True)
class Series:
    """A series that reports sample and plot from a program's metrics: `metric` (a counter or
    gauge, all its label sets) combined per node as `combine` (a PromQL aggregation), plotted
    under `title` in `unit`, as a rate per second with `rate` (a counter's requests)."""

    metric: str
    series: str
    title: str
    unit: str
    combine: Literal["sum", "max"] = "sum"
    rate: bool = False


@dataclass(frozen=True)
class RunsOn:
    """When a program runs on a node: in one of `roles`; on a subnet node, only on
    `subnet_types` (None: every type); only while the node has the registry feature `gate`
    (None: always); and, with `needs_domain`, only while the node's record has a domain."""

    roles: frozenset[Role] = EVERY_ROLE
    subnet_types: frozenset[SubnetType] | None = None
    gate: str | None = None
    needs_domain: bool = False

    def admits(
        self, role: Role, subnet_type: SubnetType | None, open_gates: frozenset[str], domain: bool
    ) -> bool:
        """Whether the program runs on a node of `role` (in a subnet of `subnet_type`) with
        these gates open and (`domain`) a domain or not."""
        if role not in self.roles:
            return False
        types = self.subnet_types
        if role is Role.REPLICA and types is not None and subnet_type not in types:
            return False
        if self.gate is not None and self.gate not in open_gates:
            return False
        return domain or not self.needs_domain

    def gate_open(self, snapshot: RegistrySnapshot, node_id: str, flags: frozenset[str]) -> bool:
        """Whether its gate is open for the node (no gate is): opened by the orchestrator's
        flags (`flags`: the gates they open), or by the node's registry feature."""
        gate = self.gate
        return gate is None or gate in flags or snapshot.node_has_feature(node_id, gate)

    def admits_node(
        self, snapshot: RegistrySnapshot, node_id: str, flags: frozenset[str] = frozenset()
    ) -> bool:
        """Whether the program runs on the node at this registry version (`flags`: the gates
        the orchestrator's flags open)."""
        subnet_id = snapshot.subnet_of(node_id)
        subnet_type = None if subnet_id is None else snapshot.subnet_type(subnet_id)
        gate = self.gate
        opened = frozenset({gate}) if gate and self.gate_open(snapshot, node_id, flags) else flags
        domain = bool(snapshot.node_domain(node_id))
        return self.admits(role_of(snapshot, node_id), subnet_type, opened, domain)


def role_of(snapshot: RegistrySnapshot, node_id: str) -> Role:
    """The node's role at this registry version."""
    if snapshot.subnet_of(node_id) is not None:
        return Role.REPLICA
    if node_id in snapshot.api_boundary_nodes:
        return Role.API_BOUNDARY
    return Role.UNASSIGNED


@dataclass(frozen=True)
class Backoff:
    """Restart delays for a program that keeps dying quickly.

    An exit after less than `min_uptime` seconds (or a failed spawn) delays the restart by
    `initial`, doubling per quick exit up to `maximum`; once an instance stayed up for
    `min_uptime`, the delay resets and an exit restarts it on the next pass.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    min_uptime: float = 10.0

    def next_delay(self, previous: float) -> float:
        return self.initial if previous <= 0 else min(self.maximum, previous * self.factor)


DEFAULT_BACKOFF = Backoff()
_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")


TEMPLATE_FIELDS = ("node_id", "ip", "version", "subnet_id", "domain", "data_dir", "ports", "listen")
"""What a program's `command`, `arguments` and `environment` may name, as `str.format` fields:
`{ip}` (the node's address in the registry: an IP, on swarm its host name), `{version}` (the
subnet's replica version, or the API boundary node's), `{subnet_id}`, `{domain}` (the node's,
or empty), `{node_id}`, `{data_dir}` (the node's data directory), `{ports[NAME]}` (the port of
its endpoint NAME) and `{listen[NAME]}` (`IP:PORT` of it, the address an IP, what a server
binds)."""


@dataclass(frozen=True)
class Program:
    """One node program.

    - `name`: its binary's name under the orchestrator's `--ic-binary-directory` (and its
      console script's), its log (`logs/<name>.log`), pid file and metric label `process`;
    - how it starts, one of: `entry`, its `main(argv)` as "module:function" (what a fork server
      runs and its console script calls); or `command`, the argv of an executable that is not
      Python (a name on PATH or a path first), always exec'd;
    - `arguments` (after the console script) and `environment`: templates (`TEMPLATE_FIELDS`)
      filled in from the registry, for a program without a `process` of its own;
    - `packages`: the Debian packages its command needs in a node image (docker, swarm);
    - `endpoints`: the ports it serves;
    - `runs_on`: when it runs;
    - `process`: its orchestrator `Process` class as "module:Class" (its flags and environment
      from the registry, and what restarts it), for the programs that need code for it; without
      one the orchestrator runs it from its templates, restarted when they come out different;
    - `supervised`: whether the orchestrator runs it (all but the orchestrator itself, which the
      backend starts on every node);
    - `series`: what reports plot from its metrics;
    - `thresholds`: the most each of its metrics (by name prefix) may read after a test (the
      metric checks; a test changes them with the `metric_thresholds` marker);
    - `job`: its Prometheus job (its name by default, when it serves metrics);
    - `stop_grace`: seconds between SIGTERM and SIGKILL (None: the orchestrator's
      `--stop-grace-period`); `backoff`: its crash-loop backoff (None: the orchestrator's).
    """

    name: str
    entry: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    runs_on: RunsOn = RunsOn(frozenset({Role.REPLICA}))
    process: str | None = None
    command: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)
    packages: tuple[str, ...] = ()
    supervised: bool = True
    series: tuple[Series, ...] = ()
    thresholds: Mapping[str, float] = field(default_factory=dict, hash=False)
    job: str | None = None
    stop_grace: float | None = None
    backoff: Backoff | None = None
    order: int = field(default=100, compare=False)
    """Where it starts among the programs of a role (lower first); they stop in reverse."""

    def __post_init__(self) -> None:
        def refuse(what: str) -> DescriptionError:
            return DescriptionError(f"program {self.name!r}: {what}")

        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise refuse("its name must be lowercase letters, digits and '-'")
        if (self.entry is None) == (not self.command):
            raise refuse("give it one way to start: an entry ('module:function') or a command")
        if self.entry is not None and not (
            isinstance(self.entry, str) and _TARGET.match(self.entry)
        ):
            raise refuse(f"entry {self.entry!r} is not 'module:function'")
        if not all(isinstance(part, str) and part for part in self.command):
            raise refuse(f"command {self.command!r} is not a sequence of non-empty strings")
        if self.process is not None and not _TARGET.match(self.process):
            raise refuse(f"process {self.process!r} is not 'module:Class'")
        if self.process is not None and (self.command or self.arguments or self.environment):
            raise refuse("a process of its own makes its command line: no command, arguments "
                         "or environment beside it")  # fmt: skip
        for package in self.packages:
            if not isinstance(package, str) or not _PACKAGE.match(package):
                raise refuse(f"package {package!r} is not a Debian package name")
        if not isinstance(self.runs_on, RunsOn) or not self.runs_on.roles:
            raise refuse("it runs on no role (runs_on.roles is empty)")
        gate = self.runs_on.gate
        if gate is not None and gate not in KNOWN_FEATURES:
            raise refuse(
                f"its gate {gate!r} is no node feature of the registry's "
                f"({', '.join(sorted(KNOWN_FEATURES))})"
            )
        if self.supervised and self.runs_on.roles not in SUPERVISED_ROLES:
            roles = ", ".join(sorted(self.runs_on.roles))
            raise refuse(
                f"the orchestrator runs a program on subnet nodes or on API boundary nodes, "
                f"not on {roles}"
            )
        names: set[str] = set()
        ports: set[tuple[int, bool]] = set()  # (port, metrics): /metrics may share a port
        for endpoint in self.endpoints:
            if not isinstance(endpoint, Endpoint):
                raise refuse(f"{endpoint!r} is not an Endpoint")
            what = f"endpoint {endpoint.name!r}"
            if not isinstance(endpoint.serves, Serves):
                raise refuse(f"{what} on port {endpoint.port} serves {endpoint.serves!r}, not "
                             f"one of {', '.join(s.name for s in Serves)}")  # fmt: skip
            if not isinstance(endpoint.port, int) or not 0 < endpoint.port < 65536:
                raise refuse(f"{what} has no port (got {endpoint.port!r})")
            port = (endpoint.port, endpoint.serves is Serves.METRICS)
            if endpoint.name in names or port in ports:
                raise refuse(f"{what} on port {endpoint.port}: a name or port given twice")
            if not endpoint.path.startswith("/"):
                raise refuse(f"{what}: path {endpoint.path!r} does not start with '/'")
            if endpoint.host is Host.NODE_DOMAIN and not self.runs_on.needs_domain:
                raise refuse(
                    f"{what} answers to the node's domain: give it RunsOn(needs_domain=True)"
                )
            names.add(endpoint.name)
            ports.add(port)
        metrics = [e for e in self.endpoints if e.serves is Serves.METRICS]
        if len(metrics) > 1:
            raise refuse("it serves metrics on more than one port")
        if self.job is not None and not metrics:
            raise refuse(f"Prometheus job {self.job!r} without a metrics endpoint")
        if self.thresholds and not metrics:
            raise refuse(f"thresholds of {', '.join(self.thresholds)} without a metrics endpoint")
        for name, maximum in self.thresholds.items():
            if not isinstance(maximum, int | float) or isinstance(maximum, bool):
                raise refuse(f"threshold of {name!r}: {maximum!r} is not a number")
        if self.series and not metrics:
            raise refuse(
                f"series {', '.join(s.series for s in self.series)} without a metrics endpoint"
            )
        if self.stop_grace is not None and not self.stop_grace > 0:
            raise refuse(f"stop_grace {self.stop_grace!r} is not a number of seconds > 0")
        sample = self.context("node", "127.0.0.1", "0", "subnet", "node.example", Path("/data"))
        for template in (*self.command, *self.arguments, *self.environment.values()):
            try:
                template.format(**sample)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise refuse(
                    f"template {template!r}: {exc!r}; it may name {', '.join(TEMPLATE_FIELDS)}, "
                    f"ports and listen by endpoint name ({', '.join(sorted(names)) or 'none'})"
                ) from None

    def context(
        self,
        node_id: str,
        ip: str,
        version: str,
        subnet_id: str,
        domain: str,
        data_dir: Path,
        bind_ip: str | None = None,
    ) -> dict[str, object]:
        """What its templates are filled in with (`TEMPLATE_FIELDS`) on a node; `bind_ip`: the
        IP of `ip` when that is a host name (listen addresses take it)."""
        bind = bind_ip or ip
        shown = f"[{bind}]" if ":" in bind else bind
        return {
            "node_id": node_id,
            "ip": ip,
            "version": version,
            "subnet_id": subnet_id,
            "domain": domain,
            "data_dir": str(data_dir),
            "ports": {e.name: e.port for e in self.endpoints},
            "listen": {e.name: f"{shown}:{e.port}" for e in self.endpoints},
        }

    def fill(self, templates: Iterable[str], context: Mapping[str, object]) -> list[str]:
        """`templates` filled in with `context` (`context()`)."""
        return [template.format(**context) for template in templates]

    @property
    def metrics(self) -> Endpoint | None:
        """Its metrics endpoint, if it serves metrics."""
        return next((e for e in self.endpoints if e.serves is Serves.METRICS), None)

    @property
    def scrape_job(self) -> str | None:
        """Its Prometheus job: None unless it serves metrics."""
        return None if self.metrics is None else self.job or self.name

    @property
    def forkable(self) -> bool:
        """Whether a fork server can run it (a Python entry point), rather than an exec."""
        return self.entry is not None


def check_programs(programs: Iterable[Program]) -> tuple[Program, ...]:
    """`programs` as a catalog, in start order: refused (naming both) when two share a name,
    a Prometheus job, a URL name or a port on a node where both can run."""
    catalog = tuple(sorted(programs, key=lambda p: p.order))
    for index, program in enumerate(catalog):
        for other in catalog[:index]:
            pair = f"programs {other.name!r} and {program.name!r}"
            if other.name == program.name:
                raise DescriptionError(f"two programs are called {program.name!r}")
            if other.scrape_job is not None and other.scrape_job == program.scrape_job:
                raise DescriptionError(f"{pair} share the Prometheus job {program.scrape_job!r}")
            if not other.runs_on.roles & program.runs_on.roles:
                continue
            for mine in program.endpoints:
                for theirs in other.endpoints:
                    if mine.port == theirs.port or mine.name == theirs.name:
                        raise DescriptionError(
                            f"{pair} both serve {mine.name!r}/{theirs.name!r} on ports "
                            f"{theirs.port}/{mine.port} of the same node"
                        )
    return catalog
