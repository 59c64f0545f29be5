"""The programs' descriptions (`harness.node.description`, `harness.node.catalog`): a description
with a missing or contradictory piece is refused at once, naming it; and what the orchestrator,
the fork servers, the driver's services, Prometheus and the reports use is derived from the one
catalog, not listed again."""

from __future__ import annotations

import dataclasses

import pytest

from harness.driver.prometheus import JOBS
from harness.driver.report import PLOTS
from harness.driver.sampler import SERIES
from harness.driver.services import service_named, services_on, unready
from harness.node import programs
from harness.node.catalog import IC_BOUNDARY, IC_GATEWAY, ORCHESTRATOR, PROGRAMS, REPLICA
from harness.node.description import (
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
from harness.node.orchestrator.args import PROCESS_NAMES
from harness.node.orchestrator.metrics import OrchestratorMetrics
from harness.node.orchestrator.policy import open_gates
from harness.node.orchestrator.processes import process_specs, process_type_of
from harness.node.registry import NodeRecord, RegistrySnapshot, SubnetRecord, SubnetType
from harness.node.registry.records import ApiBoundaryNodeRecord
from harness.node.status import StatusResponse, encode_status

ENTRY = "harness.node.replica.__main__:main"


def sidecar(**changes: object) -> Program:
    """A side-car on subnet nodes, changed as the test says."""
    fields: dict[str, object] = {
        "name": "sidecar",
        "entry": ENTRY,
        "endpoints": (
            Endpoint("sidecar", 8081, Serves.HEALTH, path="/healthz"),
            Endpoint("sidecar_metrics", 9326, Serves.METRICS),
        ),
        "runs_on": RunsOn(frozenset({Role.REPLICA})),
    }
    fields.update(changes)
    return Program(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Side_car"}, "'Side_car': its name must be lowercase"),
        (
            {"entry": "harness.node.replica"},
            "entry 'harness.node.replica' is not 'module:function'",
        ),
        ({"process": "ReplicaProcess"}, "process 'ReplicaProcess' is not 'module:Class'"),
        ({"runs_on": RunsOn(frozenset())}, "it runs on no role"),
        (
            {"runs_on": RunsOn(frozenset({Role.REPLICA}), gate="acme")},
            "its gate 'acme' is no node feature of the registry's (ic_gateway)",
        ),
        (
            {"process": "x.y:Z", "runs_on": RunsOn()},
            "the orchestrator runs a program on subnet nodes or on API boundary nodes, not on "
            "api_boundary, replica, unassigned",
        ),
        (
            {"endpoints": (Endpoint("sidecar", 8081, "health"),)},  # type: ignore[arg-type]
            "endpoint 'sidecar' on port 8081 serves 'health', not one of API, METRICS, HEALTH",
        ),
        (
            {"endpoints": (Endpoint("sidecar", None, Serves.HEALTH),)},  # type: ignore[arg-type]
            "endpoint 'sidecar' has no port",
        ),
        (
            {"endpoints": (Endpoint("a", 8081, Serves.API), Endpoint("b", 8081, Serves.API))},
            "endpoint 'b' on port 8081: a name or port given twice",
        ),
        (
            {"endpoints": (Endpoint("a", 8081, Serves.HEALTH, path="healthz"),)},
            "endpoint 'a': path 'healthz' does not start with '/'",
        ),
        (
            {"endpoints": (Endpoint("a", 8081, Serves.API, host=Host.NODE_DOMAIN),)},
            "endpoint 'a' answers to the node's domain: give it RunsOn(needs_domain=True)",
        ),
        (
            {"endpoints": (Endpoint("a", 8081, Serves.HEALTH),), "job": "sidecar"},
            "Prometheus job 'sidecar' without a metrics endpoint",
        ),
        (
            {
                "endpoints": (Endpoint("a", 8081, Serves.HEALTH),),
                "series": (Series("sidecar_total", "sidecar_requests", "Requests", "requests/s"),),
            },
            "series sidecar_requests without a metrics endpoint",
        ),
        (
            {
                "endpoints": (
                    Endpoint("a", 9326, Serves.METRICS),
                    Endpoint("b", 9327, Serves.METRICS),
                )
            },
            "it serves metrics on more than one port",
        ),
        ({"stop_grace": 0}, "stop_grace 0 is not a number of seconds > 0"),
        ({"command": ("sh",)}, "give it one way to start: an entry ('module:function') or a"),
        (
            {"entry": None, "command": ("httpd", "-p", "{listen[nope]}")},
            "template '{listen[nope]}': KeyError('nope'); it may name node_id, ip, version",
        ),
        ({"packages": ("Busy Box",)}, "package 'Busy Box' is not a Debian package name"),
        (
            {"endpoints": (Endpoint("a", 8081, Serves.HEALTH),), "thresholds": {"x": 1}},
            "thresholds of x without a metrics endpoint",
        ),
    ],
)
def test_a_description_with_a_missing_piece_is_refused_naming_it(changes, message) -> None:
    with pytest.raises(DescriptionError) as refused:
        sidecar(**changes)
    assert str(refused.value).startswith("program '")
    assert message in str(refused.value)


def test_programs_that_would_clash_on_a_node_are_refused_naming_both() -> None:
    clash = sidecar(endpoints=(Endpoint("sidecar", 8080, Serves.HEALTH),))
    with pytest.raises(DescriptionError, match="programs 'replica' and 'sidecar' both serve"):
        check_programs([*PROGRAMS, clash])
    with pytest.raises(DescriptionError, match="two programs are called 'replica'"):
        check_programs([*PROGRAMS, dataclasses.replace(sidecar(), name="replica")])
    with pytest.raises(DescriptionError, match="share the Prometheus job 'replica'"):
        check_programs([*PROGRAMS, sidecar(job="replica")])
    # On API boundary nodes only, the replica's ports are free.
    elsewhere = sidecar(
        endpoints=(Endpoint("edge", 8080, Serves.HEALTH),),
        runs_on=RunsOn(frozenset({Role.API_BOUNDARY})),
    )
    assert elsewhere in check_programs([*PROGRAMS, elsewhere])


def test_a_process_class_that_does_not_fit_its_description_is_refused() -> None:
    with pytest.raises(DescriptionError, match=r"process 'harness\.node\.nope:X': No module"):
        process_type_of(sidecar(process="harness.node.nope:X"))
    wrong = sidecar(process="harness.node.orchestrator.processes:ReplicaProcess")
    with pytest.raises(DescriptionError, match="is called 'replica'"):
        process_type_of(wrong)
    with pytest.raises(DescriptionError, match="is not a Process"):
        process_type_of(sidecar(process="harness.node.catalog:supervised"))


def test_everything_is_derived_from_the_one_catalog() -> None:
    names = [p.name for p in PROGRAMS]
    assert names == ["orchestrator", "replica", "ic-gateway", "ic-boundary"]
    # The orchestrator runs every program but itself, in start order, with their Process.
    assert PROCESS_NAMES == ("replica", "ic-gateway", "ic-boundary")
    assert [s.process_type.NAME for s in process_specs()] == list(PROCESS_NAMES)
    # Its metrics know each one from the start.
    metrics = OrchestratorMetrics("1.0", PROCESS_NAMES)
    for name in PROCESS_NAMES:
        value = metrics.registry.get_sample_value(
            "orchestrator_processes_start_attempts_total", {"process": name}
        )
        assert value == 0
    # Fork servers run their entry points.
    assert {p.name: p.entry for p in PROGRAMS}.items() <= programs.PROGRAMS.items()
    # A Prometheus job per program that serves metrics; the sampler's series and the plots.
    assert JOBS == ("orchestrator", "replica", "ic-gateway", "ic-boundary")
    assert [s[2] for s in SERIES] == [s.series for p in PROGRAMS for s in p.series]
    assert [plot[0] for plot in PLOTS[1:]] == [s[2] for s in SERIES]


def _snapshot(**nodes: NodeRecord) -> RegistrySnapshot:
    return RegistrySnapshot(
        1,
        subnets={
            "ce": SubnetRecord(SubnetType.CLOUD_ENGINE, ("ce-gated", "ce-plain"), "v1"),
            "app": SubnetRecord(SubnetType.APPLICATION, ("app-gated",), "v1"),
        },
        nodes=nodes,
        api_boundary_nodes={
            "bn": ApiBoundaryNodeRecord("v1"),
            "bn-bare": ApiBoundaryNodeRecord("v1"),
        },
    )


SNAPSHOT = _snapshot(
    **{
        "ce-gated": NodeRecord("127.1.0.2", features=frozenset({"ic_gateway"})),
        "ce-plain": NodeRecord("127.1.0.3"),
        "app-gated": NodeRecord("127.1.0.4", features=frozenset({"ic_gateway"})),
        "bn": NodeRecord("127.1.0.5", domain="api.example"),
        "bn-bare": NodeRecord("127.1.0.6"),
        "spare": NodeRecord("127.1.0.7"),
    }
)


@pytest.mark.parametrize(
    ("node_id", "names"),
    [
        ("ce-gated", ["gateway", "gateway_metrics", "api", "metrics"]),
        ("ce-plain", ["api", "metrics"]),
        ("app-gated", ["api", "metrics"]),
        ("bn", ["boundary", "boundary_metrics"]),
        ("bn-bare", []),
        ("spare", []),
    ],
)
def test_what_a_node_serves_follows_its_role_and_its_programs_descriptions(node_id, names) -> None:
    served = [s.name for s in services_on(SNAPSHOT, node_id)]
    assert served == [*names, "orchestrator_metrics", "dashboard"]


def test_the_orchestrator_s_flag_opens_a_gate_the_registry_does_not() -> None:
    assert open_gates(PROGRAMS, SNAPSHOT, "ce-plain", frozenset()) == frozenset()
    assert open_gates(PROGRAMS, SNAPSHOT, "ce-plain", frozenset({"ic_gateway"})) == {"ic_gateway"}
    assert open_gates(PROGRAMS, SNAPSHOT, "ce-gated", frozenset()) == {"ic_gateway"}
    assert IC_GATEWAY.runs_on.admits_node(SNAPSHOT, "ce-plain", frozenset({"ic_gateway"}))
    assert not IC_GATEWAY.runs_on.admits_node(SNAPSHOT, "app-gated", frozenset({"ic_gateway"}))
    assert not IC_BOUNDARY.runs_on.admits_node(SNAPSHOT, "bn-bare")
    assert ORCHESTRATOR.runs_on.admits_node(SNAPSHOT, "spare")
    assert not REPLICA.runs_on.admits_node(SNAPSHOT, "spare")


def test_readiness_is_judged_by_what_an_endpoint_serves() -> None:
    api, dashboard = service_named("gateway"), service_named("dashboard")
    assert api.ready_path == "/api/v2/status" and dashboard.ready_path == "/"
    assert service_named("metrics").ready_path is None
    assert api.host("x.example") == "gateway.icp"
    assert service_named("boundary").host("api.example") == "api.example"
    assert unready(api, 200, encode_status(StatusResponse(replica_health_status="healthy"))) is None
    assert (
        unready(api, 200, encode_status(StatusResponse(replica_health_status="starting")))
        == "health starting"
    )
    assert unready(api, 502, b"bad gateway") == "502: bad gateway"
    assert (unready(api, 200, b"<html>") or "").startswith("200: ")
    assert unready(dashboard, 200, b"") is None
    assert unready(dashboard, 503, b"") == "answered 503"


def test_a_program_s_grace_and_backoff_are_its_own_or_the_orchestrator_s(tmp_path) -> None:
    from harness.node.description import Backoff
    from harness.node.orchestrator.args import parse_args

    flags = parse_args(["--node-id", "n", "--registry-local-store", "r", "--data-dir", "d"])
    (own,) = process_specs([sidecar(stop_grace=2.5, backoff=Backoff(initial=1.0))])
    assert own.stop_grace(flags) == 2.5
    assert own.backoff(Backoff()) == Backoff(initial=1.0)
    (default,) = process_specs([sidecar()])
    assert default.stop_grace(flags) == flags.stop_grace_period
    assert default.backoff(Backoff(maximum=5)) == Backoff(maximum=5)


def test_a_program_without_a_process_of_its_own_runs_from_its_templates(tmp_path) -> None:
    from harness.node.orchestrator.args import parse_args
    from harness.node.orchestrator.process import Assignment, KeepRunning, Restart

    program = sidecar(
        entry=None,
        command=("busybox", "httpd", "-f", "-p", "{listen[sidecar]}", "-h", "{data_dir}/www"),
        environment={"NODE": "{node_id}", "SUBNET": "{subnet_id}", "AT": "{version}"},
    )
    process_type = process_type_of(program)
    flags = parse_args(["--node-id", "n1", "--registry-local-store", "r", "--data-dir", "/d"])
    node = NodeRecord("127.1.0.2")
    first = process_type.build(
        process_type.configure(flags),
        process_type.args_for(Assignment("v1", "subnet-a", SubnetType.APPLICATION, node)),
    )
    spec = first.launch_spec()
    assert spec.argv == ("busybox", "httpd", "-f", "-p", "127.1.0.2:8081", "-h", "/d/www")
    assert dict(spec.env) == {"NODE": "n1", "SUBNET": "subnet-a", "AT": "v1"}
    assert not spec.forkable  # a command is exec'd, whatever the spawn mode
    same = process_type.args_for(Assignment("v1", "subnet-a", SubnetType.APPLICATION, node))
    assert first.restart_decision(same) == KeepRunning()
    moved = process_type.args_for(Assignment("v1", "subnet-b", SubnetType.APPLICATION, node))
    assert first.restart_decision(moved) == Restart("its environment changed (SUBNET)")
    upgraded = process_type.args_for(Assignment("v2", "subnet-a", SubnetType.APPLICATION, node))
    assert first.restart_decision(upgraded) == Restart("version changed from v1 to v2")
    other_ip = NodeRecord("127.1.0.3")
    readdressed = process_type.args_for(
        Assignment("v1", "subnet-a", SubnetType.APPLICATION, other_ip)
    )
    assert first.restart_decision(readdressed) == Restart("its command line changed")
