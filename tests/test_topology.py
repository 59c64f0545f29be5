"""Topology declaration: the builder's shape, planning, and errors raised before any start."""

from __future__ import annotations

import pytest

from harness.driver import InternetComputer, Subnet, SubnetType, TopologyError


def test_builder_plans_ids_for_every_node() -> None:
    plan = (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(4).with_ic_gateway())
        .with_unassigned_nodes(2)
        .with_api_boundary_nodes(1)
        .plan()
    )
    assert [s.subnet_id for s in plan.subnets] == ["subnet-0", "subnet-1"]
    assert plan.subnets[1].subnet_type is SubnetType.CLOUD_ENGINE
    assert plan.subnets[1].node_ids == tuple(f"subnet-1-node-{i}" for i in range(4))
    assert [n.node_id for n in plan.nodes][5:] == [
        "unassigned-node-0",
        "unassigned-node-1",
        "api-bn-0",
    ]
    assert [n.index for n in plan.nodes] == list(range(8))
    assert plan.nodes[1].features == frozenset({"ic_gateway"})
    assert plan.nodes[0].features == frozenset()
    boundary = plan.nodes[-1]
    assert boundary.api_boundary and boundary.domain == "api0.ic.icp"
    assert boundary.subnet_id is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: InternetComputer(), "the topology has no nodes"),
        (lambda: InternetComputer().add_subnet(Subnet(SubnetType.SYSTEM)), "has no nodes"),
        (lambda: Subnet(SubnetType.SYSTEM).add_nodes(0), "positive integer, got 0"),
        (
            lambda: (
                InternetComputer()
                .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1).with_name("a"))
                .add_subnet(Subnet(SubnetType.APPLICATION).add_nodes(1).with_name("a"))
            ),
            "two subnets are named 'a'",
        ),
        (
            lambda: InternetComputer().with_api_boundary_nodes(2, ["x.icp", "X.icp."]),
            "two API boundary nodes share the domain 'x.icp'",
        ),
        (
            lambda: InternetComputer().with_api_boundary_nodes(2, ["x.icp"]),
            "2 API boundary node(s) but 1 domain(s) given",
        ),
        (
            lambda: InternetComputer().with_api_boundary_nodes(1, ["not a domain"]),
            "is not a valid FQDN",
        ),
        (lambda: InternetComputer().with_unassigned_nodes(-1), "count must be >= 0"),
        (lambda: Subnet(SubnetType.SYSTEM).with_feature("warp"), "unknown node feature 'warp'"),
        (lambda: InternetComputer().with_name("Bad Name").with_unassigned_nodes(1), "testnet name"),
        (lambda: InternetComputer().with_unassigned_nodes(1001), "at most 1000"),
        (lambda: InternetComputer().add_subnet("system"), "add_subnet takes a Subnet"),
        (
            lambda: (
                InternetComputer()
                .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
                .with_machine_label("subnet-7", "zone=a")
            ),
            "machine label for 'subnet-7': no such node or subnet",
        ),
        (
            lambda: (
                InternetComputer()
                .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
                .with_machine_label("subnet-0", "zone a")
            ),
            "machine label 'zone a' for 'subnet-0': expected KEY=VALUE",
        ),
    ],
)
def test_invalid_topologies_fail_with_a_message_naming_the_problem(build, message) -> None:
    with pytest.raises(TopologyError) as error:
        result = build()
        result.plan()
    assert message in str(error.value)


def test_gate_can_be_turned_off_again() -> None:
    subnet = Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1).with_ic_gateway().with_ic_gateway(False)
    assert subnet.features == set()


def test_machine_labels_pin_a_subnet_or_one_node() -> None:
    plan = (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(2))
        .with_unassigned_nodes(1)
        .with_machine_label("subnet-0", "zone=a")
        .with_machine_label("subnet-0-node-1", "zone=b")
        .with_machine_label("unassigned-node-0", "disk=ssd")
        .plan()
    )
    assert [(n.node_id, n.machine_label) for n in plan.nodes] == [
        ("subnet-0-node-0", "zone=a"),
        ("subnet-0-node-1", "zone=b"),
        ("unassigned-node-0", "disk=ssd"),
    ]


def test_a_program_s_binary_is_checked_and_kept_in_the_topology_document(tmp_path) -> None:
    from harness.driver.topology import topology_document, topology_from_document

    script = tmp_path / "ic-gateway"
    script.write_text("#!/bin/sh\n")
    topology = InternetComputer().add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(1))
    with pytest.raises(TopologyError, match=rf"with_binary\('ic-gateway'\): {script} is no exe"):
        topology.with_binary("ic-gateway", script).plan()
    script.chmod(0o755)
    assert topology.plan().binaries == (("ic-gateway", str(script)),)
    again = topology_from_document(topology_document(topology))
    assert again.binaries == {"ic-gateway": str(script)}
    with pytest.raises(TopologyError, match="'nginx' is no program the orchestrator runs"):
        InternetComputer().add_fast_single_node_subnet(SubnetType.SYSTEM).with_binary(
            "nginx", script
        ).plan()
