"""The driver's registry: the initial version from a plan, and the mutations tests make."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.driver import HarnessError, InternetComputer, Subnet, SubnetType
from harness.driver.registry import RegistryWriter, initial_snapshot


@pytest.fixture
def writer(tmp_path: Path) -> RegistryWriter:
    plan = (
        InternetComputer()
        .add_subnet(Subnet(SubnetType.SYSTEM).add_nodes(1))
        .add_subnet(Subnet(SubnetType.CLOUD_ENGINE).add_nodes(2).with_ic_gateway())
        .with_unassigned_nodes(1)
        .with_api_boundary_nodes(1)
        .plan()
    )
    ips = {n.node_id: f"127.5.5.{n.index + 2}" for n in plan.nodes}
    registry = RegistryWriter(tmp_path / "registry")
    registry.write_initial(initial_snapshot(plan, ips))
    return registry


def test_initial_version_matches_the_plan(writer: RegistryWriter) -> None:
    s = writer.latest()
    assert s.version == 1
    assert s.subnets["subnet-1"].members == ("subnet-1-node-0", "subnet-1-node-1")
    assert s.nodes["subnet-1-node-0"].ip == "127.5.5.3"
    assert s.node_has_feature("subnet-1-node-1", "ic_gateway")
    assert s.api_boundary_node_version("api-bn-0") == "1.0.0"
    assert s.node_domain("api-bn-0") == "api0.ic.icp"
    assert s.subnet_of("unassigned-node-0") is None


def test_each_mutation_writes_one_new_version(writer: RegistryWriter) -> None:
    assert writer.unassign_node("subnet-1-node-1") == 2
    assert writer.latest().subnet_of("subnet-1-node-1") is None
    assert writer.assign_node("subnet-1-node-1", "subnet-0") == 3
    assert writer.latest().subnets["subnet-0"].members == ("subnet-0-node-0", "subnet-1-node-1")
    assert writer.assign_node("unassigned-node-0", "subnet-1") == 4
    assert writer.set_replica_version("subnet-1", "2.0.0") == 5
    assert writer.latest().replica_version("subnet-1") == "2.0.0"
    assert writer.set_domain("api-bn-0", "other.icp") == 6
    assert writer.latest().node_domain("api-bn-0") == "other.icp"
    assert writer.set_domain("api-bn-0", None) == 7
    assert writer.set_feature("subnet-1-node-0", "ic_gateway", False) == 8
    assert not writer.latest().node_has_feature("subnet-1-node-0", "ic_gateway")
    assert writer.remove_api_boundary_node("api-bn-0") == 9
    assert writer.add_api_boundary_node("api-bn-0", "3.0.0") == 10
    assert writer.latest().api_boundary_node_version("api-bn-0") == "3.0.0"
    assert writer.store.versions() == list(range(1, 11))
    # Earlier versions are unchanged.
    assert writer.store.read(1).subnets["subnet-1"].replica_version == "1.0.0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.assign_node("ghost", "subnet-0"), "no node 'ghost'"),
        (lambda w: w.assign_node("unassigned-node-0", "nope"), "no subnet 'nope'"),
        (lambda w: w.unassign_node("unassigned-node-0"), "is not assigned"),
        (lambda w: w.assign_node("api-bn-0", "subnet-0"), "is an API boundary node"),
        (lambda w: w.remove_api_boundary_node("subnet-0-node-0"), "has no API boundary"),
        (lambda w: w.set_replica_version("nope", "1"), "no subnet 'nope'"),
    ],
)
def test_bad_mutations_are_refused_and_write_nothing(
    writer: RegistryWriter, change, message
) -> None:
    with pytest.raises(HarnessError, match=message):
        change(writer)
    assert writer.store.versions() == [1]
