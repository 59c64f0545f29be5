"""The registry format, the store's atomic immutable versions, and the last-good client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.node.registry import (
    ApiBoundaryNodeRecord,
    LocalStore,
    NodeRecord,
    RegistryClient,
    RegistryFormatError,
    RegistrySnapshot,
    SubnetRecord,
    SubnetType,
)


def snapshot(version: int = 1, **changes: object) -> RegistrySnapshot:
    base = RegistrySnapshot(
        version=version,
        subnets={"s1": SubnetRecord(SubnetType.CLOUD_ENGINE, ("n1", "n2"), "1.0.0")},
        nodes={
            "n1": NodeRecord("127.1.0.2", features=frozenset({"ic_gateway"})),
            "n2": NodeRecord("127.1.0.3"),
            "b1": NodeRecord("127.1.0.4", domain="api0.ic.icp"),
            "u1": NodeRecord("127.1.0.5"),
        },
        api_boundary_nodes={"b1": ApiBoundaryNodeRecord("1.0.0")},
        unassigned_nodes_version="0.9.0",
    )
    return RegistrySnapshot(**{**base.__dict__, **changes})


def test_round_trip_and_lookups(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "reg")
    store.write(snapshot())
    read = store.read(1)
    assert read == snapshot()
    assert read.subnet_of("n2") == "s1"
    assert read.subnet_of("u1") is None
    assert read.subnet_type("s1") is SubnetType.CLOUD_ENGINE
    assert read.replica_version("s1") == "1.0.0"
    assert read.node_domain("b1") == "api0.ic.icp"
    assert read.node_has_feature("n1", "ic_gateway")
    assert not read.node_has_feature("n2", "ic_gateway")
    assert read.api_boundary_node_version("b1") == "1.0.0"
    assert read.api_boundary_node_version("n1") is None


def test_versions_are_immutable_and_sequential(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    path = store.write(snapshot(1))
    assert path.name == "00000000000000000001.json"
    assert not os.access(path, os.W_OK) or os.getuid() == 0
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    with pytest.raises(ValueError, match="next version must be 2, got 1"):
        store.write(snapshot(1))
    with pytest.raises(ValueError, match="next version must be 2, got 3"):
        store.write(snapshot(3))
    store.write(snapshot(2))
    assert store.versions() == [1, 2]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), "unknown key(s) 'extra'"),
        (lambda d: d.update(version="1"), "version: expected an integer >= 1"),
        (lambda d: d["subnets"]["s1"].update(subnet_type="cloud"), "is not one of"),
        (lambda d: d["subnets"]["s1"].update(members="n1"), "members: expected a list"),
        (lambda d: d["subnets"]["s1"]["members"].append("ghost"), "'ghost' is not a node"),
        (lambda d: d["nodes"]["n1"].update(http_port=70000), "http_port: expected an integer"),
        (lambda d: d["nodes"]["n1"].update(features=["warp"]), "unknown feature(s)"),
        (lambda d: d["subnets"]["s1"]["members"].append("b1"), "must be unassigned"),
        (lambda d: d["nodes"]["n1"].update(ip=None), "nodes.n1.ip"),
    ],
)
def test_format_errors_name_the_problem(tmp_path: Path, mutate, message: str) -> None:
    data = snapshot().to_json()
    mutate(data)
    (tmp_path / "00000000000000000001.json").write_text(json.dumps(data))
    with pytest.raises(RegistryFormatError) as error:
        LocalStore(tmp_path).read(1)
    assert message in str(error.value)
    assert "00000000000000000001.json" in str(error.value)


def test_a_node_in_two_subnets_is_rejected() -> None:
    data = snapshot().to_json()
    data["subnets"]["s2"] = {"subnet_type": "system", "members": ["n1"], "replica_version": "1"}
    with pytest.raises(RegistryFormatError, match="node 'n1' is a member of two subnets"):
        RegistrySnapshot.from_json(data)


def test_client_keeps_last_good_version_and_reports_each_bad_one_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write(snapshot(1))
    errors: list[int] = []
    client = RegistryClient(store, on_error=lambda version, exc: errors.append(version))
    assert client.poll() == snapshot(1)
    # A half-written version 2 (a writer that ignored the protocol) and a wrong-typed version 3.
    (tmp_path / "00000000000000000002.json").write_text('{"version": 2, "subnets": {')
    bad = snapshot(3).to_json()
    bad["nodes"]["n1"]["http_port"] = "8080"
    (tmp_path / "00000000000000000003.json").write_text(json.dumps(bad))
    for _ in range(3):
        assert client.poll() == snapshot(1)
    assert errors == [3, 2]
    # A later good version is taken.
    (tmp_path / "00000000000000000004.json").write_text(json.dumps(snapshot(4).to_json()))
    assert client.poll() == snapshot(4)
    assert errors == [3, 2]


def test_client_picks_up_a_bad_version_once_it_is_completed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write(snapshot(1))
    client = RegistryClient(store)
    partial = tmp_path / "00000000000000000002.json"
    partial.write_text('{"version": 2,')
    assert client.poll() == snapshot(1)
    partial.write_text(json.dumps(snapshot(2).to_json()))
    assert client.poll() == snapshot(2)


def test_client_without_any_version_has_no_snapshot(tmp_path: Path) -> None:
    assert RegistryClient(LocalStore(tmp_path / "missing")).poll() is None


def test_file_name_and_content_version_must_agree(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000002.json").write_text(json.dumps(snapshot(1).to_json()))
    with pytest.raises(RegistryFormatError, match="name says version 2, the content says 1"):
        LocalStore(tmp_path).read(2)
