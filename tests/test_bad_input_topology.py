"""Bad input to the topology builder, property-based: random counts, names, domains, features.

Whatever a test declares, `InternetComputer`/`Subnet` either give a valid `Plan` or raise a
`TopologyError` whose message names the problem (the offending value or the rule broken),
never another exception. A small model of the documented rules (`_Model`) predicts which one.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from harness.driver import InternetComputer, Subnet, SubnetType, TopologyError
from harness.driver.topology import MAX_NODES, Plan

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def valid_fqdn(domain: str) -> bool:
    return 0 < len(domain) <= 253 and all(_LABEL.fullmatch(p) for p in domain.split("."))


def normalized(domain: str) -> str:
    """How the builder compares API boundary node domains."""
    return domain.lower().rstrip(".")


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` seven times in eight, so that enough declarations get as far as a plan."""
    # Not `roll == 0`: Hypothesis draws the smallest value far more often than 1 in 8.
    return st.integers(0, 7).flatmap(lambda roll: bad if roll == 5 else good)


# Strategies. Names and domains ending in "\n" have a test of their own below.
good_names = st.from_regex(_NAME, fullmatch=True)
names = mostly(
    good_names,
    st.one_of(
        st.sampled_from(["", "-a", "A", "a_b", "a.b", "a" * 41, "a" * 42, "ä", "a b"]),
        st.text(max_size=45),
    ),
).filter(lambda s: not s.endswith("\n"))
good_domains = st.lists(st.from_regex(_LABEL, fullmatch=True), min_size=1, max_size=4).map(".".join)
domains = mostly(
    st.one_of(good_domains, good_domains.map(str.upper), good_domains.map(lambda d: d + ".")),
    st.one_of(
        st.sampled_from(["", ".", "a..b", "-a.icp", "a-.icp", "a_b.icp", "x" * 64 + ".icp"]),
        st.just(".".join(["a" * 63] * 4)),  # 255 characters
        st.text(max_size=30),
    ),
).filter(lambda d: not normalized(d).endswith("\n"))
counts = mostly(
    st.integers(1, 4),
    st.one_of(
        st.integers(-3, 0),
        st.sampled_from([MAX_NODES - 1, MAX_NODES, MAX_NODES + 1]),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=False, max_value=10, min_value=-10),
        st.none(),
        st.text(max_size=3),
    ),
)
# API boundary counts stay small here: huge ones have a test of their own below.
boundary_counts = mostly(st.integers(0, 4), st.sampled_from([-1, MAX_NODES, MAX_NODES + 1]))
features = mostly(
    st.just("ic_gateway"),
    st.one_of(st.sampled_from(["", "IC_GATEWAY", "gateway"]), st.text(max_size=12)),
)


@dataclass
class SubnetSpec:
    subnet_type: SubnetType
    add_nodes: list[Any]
    name: str | None
    version: str | None
    features: list[tuple[str, bool]]


@dataclass
class Spec:
    name: str | None
    subnets: list[SubnetSpec]
    unassigned: Any | None
    boundary: tuple[Any, list[str] | None] | None


subnet_specs = st.builds(
    SubnetSpec,
    st.sampled_from(list(SubnetType)),
    st.lists(counts, max_size=2),
    st.none() | names,
    st.none() | st.sampled_from(["", "1.0.0", " "]) | st.text(max_size=8),
    st.lists(st.tuples(features, st.booleans()), max_size=2),
)
specs = st.builds(
    Spec,
    st.none() | names,
    st.lists(subnet_specs, max_size=3),
    st.none() | counts,
    st.none() | st.tuples(boundary_counts, st.none() | st.lists(domains, max_size=5)),
)


def is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass
class _Model:
    """The documented rules, applied to a `Spec` alongside the real builder."""

    subnet_nodes: list[int] = field(default_factory=list)
    subnet_features: list[set[str]] = field(default_factory=list)
    unassigned: int = 0
    boundary: int = 0
    boundary_domains: list[str] = field(default_factory=list)

    def problems(self, spec: Spec) -> list[str]:
        """Substrings of which the `TopologyError` must name at least one; [] when valid."""
        found: list[str] = []
        name = "ic" if spec.name is None else spec.name
        if not valid_name(name):
            found.append(repr(name))
        total = sum(self.subnet_nodes) + self.unassigned + self.boundary
        if total == 0:
            found.append("no nodes")
        seen: set[str] = set()
        for subnet, nodes in zip(spec.subnets, self.subnet_nodes, strict=True):
            if nodes < 1:
                found.append("has no nodes")
            if subnet.name is not None:
                if not valid_name(subnet.name) or subnet.name in seen:
                    found.append(repr(subnet.name))
                seen.add(subnet.name)
            if subnet.version == "":
                found.append("replica version is empty")
        if self.boundary_domains and len(self.boundary_domains) != self.boundary:
            found.append("domain(s) given")
        given_domains = [normalized(d) for d in self.boundary_domains] or [
            f"api{i}.{name}.icp" for i in range(self.boundary)
        ]
        seen_domains: set[str] = set()
        for domain in given_domains:
            if not valid_fqdn(domain) or domain in seen_domains:
                found.append(repr(domain))
            seen_domains.add(domain)
        if total > MAX_NODES:
            found.append(f"at most {MAX_NODES}")
        return found


def expect_builder_error(call: Callable[[], object], ok: bool, names_it: str) -> bool:
    """Run one builder call; it must raise a `TopologyError` naming `names_it` iff not `ok`.
    Return whether the build goes on."""
    if ok:
        call()
        return True
    with pytest.raises(TopologyError) as info:
        call()
    assert names_it in str(info.value)
    return False


def build(spec: Spec, model: _Model) -> InternetComputer | None:
    """Apply `spec` to the real builder; None when a builder call rightly refused a value."""
    ic = InternetComputer()
    if spec.name is not None:
        ic.with_name(spec.name)
    for subnet_spec in spec.subnets:
        subnet = Subnet(subnet_spec.subnet_type)
        nodes = 0
        chosen: set[str] = set()
        for count in subnet_spec.add_nodes:
            if not expect_builder_error(
                partial(subnet.add_nodes, count), is_count(count, 1), "add_nodes"
            ):
                return None
            nodes += count
        for feature, enabled in subnet_spec.features:
            if not expect_builder_error(
                partial(subnet.with_feature, feature, enabled),
                feature == "ic_gateway",
                repr(feature),
            ):
                return None
            (chosen.add if enabled else chosen.discard)(feature)
        if subnet_spec.name is not None:
            subnet.with_name(subnet_spec.name)
        if subnet_spec.version is not None:
            subnet.with_replica_version(subnet_spec.version)
        ic.add_subnet(subnet)
        model.subnet_nodes.append(nodes)
        model.subnet_features.append(chosen)
    unassigned = spec.unassigned
    if unassigned is not None:
        if not expect_builder_error(
            partial(ic.with_unassigned_nodes, unassigned),
            is_count(unassigned, 0),
            "with_unassigned_nodes",
        ):
            return None
        model.unassigned = unassigned
    if spec.boundary is not None:
        count, given_domains = spec.boundary
        if not expect_builder_error(
            lambda: ic.with_api_boundary_nodes(count, given_domains),
            is_count(count, 0),
            "with_api_boundary_nodes",
        ):
            return None
        model.boundary = count
        model.boundary_domains = list(given_domains or [])
    return ic


def check_plan(plan: Plan, spec: Spec, model: _Model) -> None:
    assert valid_name(plan.name)
    total = sum(model.subnet_nodes) + model.unassigned + model.boundary
    assert 0 < len(plan.nodes) == total <= MAX_NODES
    assert [n.index for n in plan.nodes] == list(range(total))
    assert len({n.node_id for n in plan.nodes}) == total
    assert len({s.subnet_id for s in plan.subnets}) == len(spec.subnets)
    by_id = {n.node_id: n for n in plan.nodes}
    for planned, subnet, nodes, chosen in zip(
        plan.subnets, spec.subnets, model.subnet_nodes, model.subnet_features, strict=True
    ):
        assert planned.subnet_type is subnet.subnet_type
        assert len(planned.node_ids) == nodes
        assert planned.replica_version
        for node_id in planned.node_ids:
            assert by_id[node_id].subnet_id == planned.subnet_id
            assert by_id[node_id].features == chosen
    boundary = [n for n in plan.nodes if n.api_boundary]
    assert len(boundary) == model.boundary
    planned_domains = [n.domain for n in boundary]
    assert all(d is not None and valid_fqdn(d) for d in planned_domains)
    assert len(set(planned_domains)) == len(planned_domains)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_any_declaration_plans_or_names_its_problem(spec: Spec) -> None:
    model = _Model()
    ic = build(spec, model)
    if ic is None:
        event("a builder call refused a value")
        return
    problems = model.problems(spec)
    if not problems:
        event("planned")
        check_plan(ic.plan(), spec, model)
        return
    event("validation refused the topology")
    with pytest.raises(TopologyError) as info:
        ic.plan()
    message = str(info.value)
    assert any(p in message for p in problems), (message, problems)


@settings(max_examples=200, deadline=None)
@given(st.one_of(counts, st.booleans()), st.integers(0, 2))
def test_counts_of_any_type_are_taken_or_refused_with_a_topology_error(
    count: Any, which: int
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: Subnet(SubnetType.APPLICATION).add_nodes(count),
        lambda: InternetComputer().with_unassigned_nodes(count),
        lambda: InternetComputer().with_api_boundary_nodes(count),
    ]
    try:
        calls[which]()
    except TopologyError as exc:
        assert repr(count) in str(exc)


@settings(max_examples=20, deadline=None)
@given(good_names, good_domains, st.integers(0, 2))
@example("ic", "api.icp", 0)
@example("s", "api.icp", 1)
@example("ic", "api.icp", 2)
def test_names_and_domains_with_a_trailing_newline_are_refused(
    name: str, domain: str, which: int
) -> None:
    subnet = Subnet(SubnetType.SYSTEM).add_nodes(1)
    ic = InternetComputer().add_subnet(subnet)
    if which == 0:
        ic.with_name(name + "\n")
    elif which == 1:
        subnet.with_name(name + "\n")
    else:
        ic.with_api_boundary_nodes(1, [domain + "\n"])
    with pytest.raises(TopologyError, match=r"\\n'"):  # the message shows the value's repr
        ic.plan()


@settings(max_examples=3, deadline=None)
@given(st.integers(10_000, 20_000))
@example(20_000)
def test_a_huge_boundary_node_count_is_refused_without_building_it(count: int) -> None:
    ic = InternetComputer().with_api_boundary_nodes(count)
    tracemalloc.start()
    try:
        with pytest.raises(TopologyError, match=f"at most {MAX_NODES}"):
            ic.validate()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"validate() of {count} API boundary nodes allocated {peak} bytes"


def _wrong_subnet_type() -> object:
    return InternetComputer().add_subnet(Subnet(cast(Any, "system")).add_nodes(1)).plan()


def _wrong_name() -> object:
    single = InternetComputer().add_fast_single_node_subnet(SubnetType.SYSTEM)
    return single.with_name(cast(Any, None)).plan()


def _wrong_subnet_name() -> object:
    subnet = Subnet(SubnetType.SYSTEM).add_nodes(1).with_name(cast(Any, 5))
    return InternetComputer().add_subnet(subnet).plan()


def _wrong_domain() -> object:
    return InternetComputer().with_api_boundary_nodes(1, cast(Any, [5])).plan()


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([_wrong_subnet_type, _wrong_name, _wrong_subnet_name, _wrong_domain]))
@example(_wrong_subnet_type)
@example(_wrong_name)
@example(_wrong_domain)
def test_wrong_types_are_topology_errors(declare: Callable[[], object]) -> None:
    with pytest.raises(TopologyError):
        declare()
