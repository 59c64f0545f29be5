"""The node programs: the orchestrator, the replica, ic-gateway and ic-boundary, each described
once (`harness.node.description.Program`), and those of the distributions installed beside the
harness. `PROGRAMS` is the one list of them: everything that runs, lists, waits for, scrapes,
plots or checks a node's programs reads it.

Adding one of ours is its description here and its code (a package with `main(argv)`, a console
script of the same name in `pyproject.toml`, and, when it needs code to make its command line,
its `Process` class in `harness.node.orchestrator.processes`).

A project that installs the harness adds its own through the entry point group
`harness.programs`: each entry point names a `Program` (or a list of them), e.g. in its
pyproject.toml::

    [project.entry-points."harness.programs"]
    sidecar = "acme_testing.sidecar:SIDECAR"

A program of theirs with the name of one of ours replaces ours. What cannot be loaded, or is
no `Program`, is a `DescriptionError` naming the entry point and its distribution.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from harness.node.description import (
    EVERY_ROLE,
    DescriptionError,
    Endpoint,
    Host,
    Program,
    Role,
    RunsOn,
    Series,
    Serves,
    check_programs,
)
from harness.node.layout import Port
from harness.node.registry.records import FEATURE_IC_GATEWAY, SubnetType

IC_GATEWAY_DOMAIN = "gateway.icp"
"""The domain ic-gateway serves by default (`--ic-gateway-domain`), the Host its health is
asked with."""

ORCHESTRATOR = Program(
    "orchestrator",
    "harness.node.orchestrator.__main__:main",
    endpoints=(
        Endpoint("orchestrator_metrics", Port.ORCHESTRATOR_METRICS, Serves.METRICS),
        Endpoint("dashboard", Port.DASHBOARD, Serves.HEALTH),
    ),
    runs_on=RunsOn(EVERY_ROLE),
    supervised=False,
    thresholds={  # the IC's defaults
        "orchestrator_cup_deserialization_failed_total": 0,
        "orchestrator_state_removal_failed_total": 0,
        "orchestrator_tasks_failed_total": 0,
        "orchestrator_processes_start_attempts_total": 1,
    },
    series=(
        Series(
            "orchestrator_processes_start_attempts_total",
            "program_starts",
            "Program starts (orchestrator), per node",
            "starts",
        ),
        Series(
            "orchestrator_process_restart_backoff_seconds",
            "restart_backoff",
            "Restart backoff (orchestrator), per node",
            "seconds",
            combine="max",
        ),
    ),
    order=0,
)
REPLICA = Program(
    "replica",
    "harness.node.replica.__main__:main",
    endpoints=(
        Endpoint("api", Port.REPLICA_HTTP, Serves.API),
        Endpoint("metrics", Port.REPLICA_METRICS, Serves.METRICS),
    ),
    runs_on=RunsOn(frozenset({Role.REPLICA})),
    process="harness.node.orchestrator.processes:ReplicaProcess",
    thresholds={  # the IC's defaults
        "critical_errors": 0,
        "consensus_invalidated_artifacts": 0,
        "dkg_invalidated_artifacts": 0,
        "idkg_invalidated_artifacts": 0,
        "certification_invalidated_artifacts": 0,
        "canister_http_invalidated_artifacts": 0,
    },
    series=(
        Series(
            "replica_http_requests_total",
            "replica_requests",
            "Requests to the replica API, per node",
            "requests/s",
            rate=True,
        ),
    ),
    order=10,
)
IC_GATEWAY = Program(
    "ic-gateway",
    "harness.node.gateway.__main__:main",
    endpoints=(
        Endpoint("gateway", Port.IC_GATEWAY, Serves.API, host=IC_GATEWAY_DOMAIN),
        Endpoint("gateway_metrics", Port.IC_GATEWAY_METRICS, Serves.METRICS),
    ),
    runs_on=RunsOn(
        frozenset({Role.REPLICA}), frozenset({SubnetType.CLOUD_ENGINE}), FEATURE_IC_GATEWAY
    ),
    process="harness.node.orchestrator.processes:IcGatewayProcess",
    series=(
        Series(
            "ic_gateway_http_total",
            "gateway_requests",
            "Requests through ic-gateway, per node",
            "requests/s",
            rate=True,
        ),
    ),
    order=20,
)
IC_BOUNDARY = Program(
    "ic-boundary",
    "harness.node.boundary.__main__:main",
    endpoints=(
        Endpoint("boundary", Port.IC_BOUNDARY, Serves.API, host=Host.NODE_DOMAIN),
        Endpoint("boundary_metrics", Port.IC_BOUNDARY_METRICS, Serves.METRICS),
    ),
    runs_on=RunsOn(frozenset({Role.API_BOUNDARY}), needs_domain=True),
    process="harness.node.orchestrator.processes:IcBoundaryProcess",
    series=(
        Series(
            "ic_boundary_requests_total",
            "boundary_requests",
            "Requests through ic-boundary, per node",
            "requests/s",
            rate=True,
        ),
    ),
    order=30,
)

ENTRY_POINT_GROUP = "harness.programs"
OURS: tuple[Program, ...] = (ORCHESTRATOR, REPLICA, IC_GATEWAY, IC_BOUNDARY)


def installed() -> list[Program]:
    """The programs the installed distributions add (`ENTRY_POINT_GROUP`)."""
    found: list[Program] = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist.name if entry_point.dist is not None else "an unknown distribution"
        where = f"entry point {entry_point.name} = {entry_point.value} of {dist}"
        try:
            value = entry_point.load()
        except Exception as exc:
            raise DescriptionError(f"{where}: it cannot be loaded: {exc!r}") from exc
        programs = list(value) if isinstance(value, list | tuple) else [value]
        for program in programs:
            if not isinstance(program, Program):
                raise DescriptionError(f"{where}: {program!r} is not a harness Program")
        found += programs
    return found


def merged(ours: Iterable[Program], theirs: Iterable[Program]) -> tuple[Program, ...]:
    """`ours` with `theirs` added, one of theirs replacing one of ours of the same name."""
    replacing = {program.name: program for program in theirs}
    kept = [replacing.pop(program.name, program) for program in ours]
    return check_programs([*kept, *replacing.values()])


PROGRAMS: tuple[Program, ...] = merged(OURS, installed())
"""Every node program, in start order."""
NODE_PORTS: tuple[int, ...] = tuple(sorted({e.port for p in PROGRAMS for e in p.endpoints}))
"""Every port a node's programs may serve (what a container publishes)."""


def supervised() -> tuple[Program, ...]:
    """The programs the orchestrator runs, in start order."""
    return tuple(p for p in PROGRAMS if p.supervised)
