"""The node programs: the orchestrator, the replica, ic-gateway and ic-boundary, each described
once (`harness.node.description.Program`). `PROGRAMS` is the one list of them: everything that
runs, lists, waits for, scrapes, plots or checks a node's programs reads it.

Adding a program is its description here and its code (a package with `main(argv)`, a console
script of the same name in `pyproject.toml`, and, when the orchestrator runs it, its `Process`
class in `harness.node.orchestrator.processes`).
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.node.description import (
    EVERY_ROLE,
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

PROGRAMS: tuple[Program, ...] = check_programs([ORCHESTRATOR, REPLICA, IC_GATEWAY, IC_BOUNDARY])
"""Every node program, in start order."""


def program(name: str) -> Program:
    """The program called `name`; a `KeyError` naming the known ones otherwise."""
    for candidate in PROGRAMS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no node program {name!r}; programs: {', '.join(p.name for p in PROGRAMS)}")


def supervised() -> tuple[Program, ...]:
    """The programs the orchestrator runs, in start order."""
    return tuple(p for p in PROGRAMS if p.supervised)


def served(programs: Iterable[Program]) -> list[tuple[Program, Endpoint]]:
    """Every endpoint of `programs`, with its program, in the catalog's order."""
    return [(p, e) for p in programs for e in p.endpoints]
