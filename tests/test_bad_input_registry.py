"""Bad registry versions, property-based: truncated JSON, wrong types, unknown keys, random JSON.

`RegistrySnapshot.from_json` and `LocalStore.read` either give a snapshot or raise
`RegistryFormatError` naming the key path that is wrong (and, from the store, the file); never
another exception. `RegistryClient.poll()` never raises: it keeps the newest good version and
reports each bad one once.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

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
from harness.node.registry.store import version_file_name

JSON = Any

# Ids without dots, so that a key path names exactly one place.
ids = st.text(st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=6)
versions = st.text(min_size=1, max_size=8)
ports = st.integers(1, 65535)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@st.composite
def snapshots(draw: st.DrawFn) -> RegistrySnapshot:
    """A valid snapshot: subnets of some nodes, API boundary nodes among the others."""
    node_ids = draw(st.lists(ids, unique=True, max_size=6))
    nodes = {
        nid: NodeRecord(
            ip=draw(st.sampled_from(["127.1.0.2", "10.0.0.1", "::1"])),
            http_port=draw(ports),
            metrics_port=draw(ports),
            domain=draw(st.none() | st.text(min_size=1, max_size=10)),
            features=draw(st.sampled_from([frozenset(), frozenset({"ic_gateway"})])),
        )
        for nid in node_ids
    }
    free = list(node_ids)
    subnets: dict[str, SubnetRecord] = {}
    for sid in draw(st.lists(ids, unique=True, max_size=3)):
        count = draw(st.integers(0, len(free)))
        members, free = free[:count], free[count:]
        subnets[sid] = SubnetRecord(
            draw(st.sampled_from(list(SubnetType))), tuple(members), draw(versions)
        )
    boundary = {nid: ApiBoundaryNodeRecord(draw(versions)) for nid in free if draw(st.booleans())}
    return RegistrySnapshot(
        version=draw(st.integers(1, 10**6)),
        subnets=subnets,
        nodes=nodes,
        api_boundary_nodes=boundary,
        unassigned_nodes_version=draw(versions),
    )


def not_a(*kinds: type, extra: st.SearchStrategy[JSON] | None = None) -> st.SearchStrategy[JSON]:
    """JSON values that are none of `kinds` (bools count as their own kind), or `extra`."""

    def wrong(value: JSON) -> bool:
        if isinstance(value, bool):
            return bool not in kinds
        return not isinstance(value, kinds)

    bad = json_values.filter(wrong)
    return bad if extra is None else st.one_of(bad, extra)


WRONG_STR = not_a(str, extra=st.just(""))
WRONG_PORT = not_a(int, extra=st.sampled_from([0, -1, 65536, 10**9]))
# For each field: the wrong values for it, by the key under its record.
WRONG_NODE_FIELD: dict[str, st.SearchStrategy[JSON]] = {
    "ip": WRONG_STR,
    "http_port": WRONG_PORT,
    "metrics_port": WRONG_PORT,
    "domain": not_a(str, type(None), extra=st.just("")),
    "features": not_a(
        list, extra=st.one_of(st.lists(not_a(str), min_size=1), st.just(["ic_gateway", "x"]))
    ),
}
WRONG_SUBNET_FIELD: dict[str, st.SearchStrategy[JSON]] = {
    "subnet_type": json_values.filter(lambda v: v not in [t.value for t in SubnetType]),
    "members": not_a(list, extra=st.one_of(st.lists(not_a(str), min_size=1), st.just([""]))),
    "replica_version": WRONG_STR,
}
REQUIRED = {"ip", "subnet_type", "members", "replica_version", "version"}


@st.composite
def mutations(draw: st.DrawFn, snapshot: RegistrySnapshot) -> tuple[JSON, str]:
    """The snapshot's JSON with one value made wrong (or a required key removed), and the key
    path the error must name."""
    data = snapshot.to_json()
    places = ["version", "unassigned_nodes_version", "nodes", "subnets", "api_boundary_nodes"]
    places += [f"nodes.{n}" for n in data["nodes"]]
    places += [f"nodes.{n}.{f}" for n in data["nodes"] for f in WRONG_NODE_FIELD]
    places += [f"subnets.{s}" for s in data["subnets"]]
    places += [f"subnets.{s}.{f}" for s in data["subnets"] for f in WRONG_SUBNET_FIELD]
    places += [f"api_boundary_nodes.{n}" for n in data["api_boundary_nodes"]]
    places += [f"api_boundary_nodes.{n}.version" for n in data["api_boundary_nodes"]]
    path = draw(st.sampled_from(places))
    *parents, key = path.split(".")
    record = data
    for part in parents:
        record = record[part]
    required = path == "version" or (len(parents) == 2 and key in REQUIRED)
    if required and draw(st.booleans()):
        del record[key]
        return data, path
    if path == "version":
        wrong = not_a(int, extra=st.integers(max_value=0))
    elif path == "unassigned_nodes_version":
        wrong = WRONG_STR
    elif len(parents) < 2:  # a record or a table of records
        wrong = not_a(dict)
    elif parents[0] == "nodes":
        wrong = WRONG_NODE_FIELD[key]
    elif parents[0] == "subnets":
        wrong = WRONG_SUBNET_FIELD[key]
    else:
        wrong = WRONG_STR
    record[key] = draw(wrong)
    return data, path


def mutated_snapshots() -> st.SearchStrategy[tuple[JSON, str]]:
    return snapshots().flatmap(mutations)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One directory for the module; each example makes its own store under it."""
    with tempfile.TemporaryDirectory(prefix="bad-input-registry-") as directory:
        yield Path(directory)


_stores = iter(range(10**9))


def new_store(scratch: Path) -> LocalStore:
    return LocalStore(scratch / f"store-{next(_stores)}")


def put_raw(store: LocalStore, version: int, content: bytes) -> Path:
    """Write a version file as a careless writer would, without any validation."""
    store.path.mkdir(parents=True, exist_ok=True)
    file = store.path / version_file_name(version)
    file.write_bytes(content)
    return file


def as_bytes(data: JSON) -> bytes:
    return json.dumps(data, indent=1).encode()


def read_raw(store: LocalStore, version: int, content: bytes) -> RegistrySnapshot | None:
    """Write `content` as `version` and read it back: a snapshot, or None after a
    `RegistryFormatError` that names the file."""
    file = put_raw(store, version, content)
    try:
        return store.read(version)
    except RegistryFormatError as exc:
        assert str(file) in str(exc)
        return None


# Valid versions.
@settings(max_examples=80, deadline=None)
@given(snapshots())
def test_valid_snapshots_round_trip_through_json_and_the_store(
    scratch: Path, snapshot: RegistrySnapshot
) -> None:
    assert RegistrySnapshot.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot
    store = new_store(scratch)
    copy_at_1 = RegistrySnapshot(
        1,
        snapshot.subnets,
        snapshot.nodes,
        snapshot.api_boundary_nodes,
        snapshot.unassigned_nodes_version,
    )
    store.write(copy_at_1)
    assert store.read(1) == copy_at_1


# Wrong types, missing keys, unknown keys.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_snapshots())
@example(({"version": True}, "version"))
@example(({"version": 1, "nodes": []}, "nodes"))
@example(({"version": 1, "nodes": {"n": {"ip": "1.2.3.4", "http_port": 8080.0}}}, "http_port"))
@example(({"version": 1, "nodes": {"n": {"ip": "1.2.3.4", "features": "ic_gateway"}}}, "features"))
def test_a_wrong_value_is_an_error_naming_its_key_path(case: tuple[JSON, str]) -> None:
    data, path = case
    with pytest.raises(RegistryFormatError) as info:
        RegistrySnapshot.from_json(data)
    assert path in str(info.value)


@st.composite
def with_unknown_key(draw: st.DrawFn) -> tuple[JSON, str, str]:
    """A valid snapshot's JSON with an unknown key in one of its records, the record's path and
    the key."""
    data = draw(snapshots()).to_json()
    records: list[tuple[str, dict[str, JSON]]] = [("registry", data)]
    records += [(f"nodes.{n}", r) for n, r in data["nodes"].items()]
    records += [(f"subnets.{s}", r) for s, r in data["subnets"].items()]
    records += [(f"api_boundary_nodes.{n}", r) for n, r in data["api_boundary_nodes"].items()]
    path, record = draw(st.sampled_from(records))
    key = draw(st.text(max_size=10).filter(lambda k: k not in record))
    assume(path != "registry" or key not in RegistrySnapshot.__dataclass_fields__)
    record[key] = draw(json_values)
    return data, path, key


@settings(max_examples=100, deadline=None)
@given(with_unknown_key())
def test_an_unknown_key_is_an_error_naming_it_and_its_record(case: tuple[JSON, str, str]) -> None:
    data, path, key = case
    with pytest.raises(RegistryFormatError) as info:
        RegistrySnapshot.from_json(data)
    message = str(info.value)
    assert path in message
    assert repr(key) in message


@st.composite
def inconsistent(draw: st.DrawFn) -> tuple[JSON, str]:
    """Valid records that contradict each other, and the path the error must name."""
    data = draw(snapshots()).to_json()
    assume(data["nodes"])
    node = draw(st.sampled_from(sorted(data["nodes"])))
    kind = draw(st.sampled_from(["missing member", "second subnet", "boundary member"]))
    subnets = data["subnets"]
    if kind == "missing member":
        sid = draw(st.sampled_from(sorted(subnets))) if subnets else "s"
        subnets.setdefault(sid, {"subnet_type": "system", "members": [], "replica_version": "1"})
        ghost = draw(ids.filter(lambda n: n not in data["nodes"]))
        subnets[sid]["members"].append(ghost)
        return data, f"subnets.{sid}.members"
    owner = next((s for s, r in subnets.items() if node in r["members"]), None)
    if owner is None:
        owner = draw(ids.filter(lambda s: s not in subnets))
        subnets[owner] = {"subnet_type": "system", "members": [node], "replica_version": "1"}
        data["api_boundary_nodes"].pop(node, None)
    if kind == "second subnet":
        other = draw(ids.filter(lambda s: s not in subnets))
        subnets[other] = {"subnet_type": "application", "members": [node], "replica_version": "1"}
        return data, repr(node)
    data["api_boundary_nodes"][node] = {"version": "1"}
    return data, f"api_boundary_nodes.{node}"


@settings(max_examples=80, deadline=None)
@given(inconsistent())
def test_records_that_contradict_each_other_are_an_error_naming_the_place(
    case: tuple[JSON, str],
) -> None:
    data, names = case
    with pytest.raises(RegistryFormatError) as info:
        RegistrySnapshot.from_json(data)
    assert names in str(info.value)


# Random and broken content.
@settings(max_examples=150, deadline=None)
@given(json_values)
def test_random_json_is_a_snapshot_or_a_format_error(data: JSON) -> None:
    try:
        snapshot = RegistrySnapshot.from_json(data)
    except RegistryFormatError as exc:
        assert str(exc)
    else:
        assert RegistrySnapshot.from_json(snapshot.to_json()) == snapshot


@settings(max_examples=80, deadline=None)
@given(snapshots(), st.data())
def test_a_truncated_version_file_is_a_format_error_naming_the_file(
    scratch: Path, snapshot: RegistrySnapshot, data: st.DataObject
) -> None:
    content = as_bytes(RegistrySnapshot(1, snapshot.subnets, snapshot.nodes).to_json())
    cut = data.draw(st.integers(0, len(content) - 1), label="cut")
    assert read_raw(new_store(scratch), 1, content[:cut]) is None


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        json_values.map(as_bytes),
        mutated_snapshots().map(lambda case: as_bytes(case[0])),
        st.sampled_from(
            [
                b"",
                b"\xef\xbb\xbf{}",
                b"\xff\xfe{\x00}\x00",
                b'{"version": 1,}',
                b'{"version": NaN}',
                b'{"version": 1e999}',
                b'{"version": 1, "version": "1"}',
                b'{"version": "\\ud800"}',
                b'{"version": 1}' + b"\x00",
                b"[" * 100 + b"]" * 100,
            ]
        ),
    )
)
def test_any_file_content_is_a_snapshot_or_a_format_error(scratch: Path, content: bytes) -> None:
    store = new_store(scratch)
    snapshot = read_raw(store, 1, content)
    assert snapshot is None or snapshot.version == 1


@settings(max_examples=5, deadline=None)
@given(
    st.one_of(
        st.integers(2_000, 100_000).map(lambda depth: b"[" * depth),
        st.integers(4_301, 10_000).map(lambda digits: b'{"version": ' + b"1" * digits + b"}"),
    )
)
@example(b"[" * 100_000)
@example(b'{"version": ' + b"1" * 5_000 + b"}")
def test_pathological_json_is_a_format_error(scratch: Path, content: bytes) -> None:
    read_raw(new_store(scratch), 1, content)


# The client.
bad_contents = st.one_of(
    st.binary(max_size=32),
    mutated_snapshots().map(lambda case: as_bytes(case[0])),
    snapshots().map(lambda s: as_bytes(s.to_json())[: len(as_bytes(s.to_json())) // 2]),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(snapshots(), bad_contents), min_size=1, max_size=8))
def test_the_client_keeps_the_newest_good_version_and_reports_each_bad_one_once(
    scratch: Path, versions_written: list[RegistrySnapshot | bytes]
) -> None:
    store = new_store(scratch)
    errors: list[tuple[int, Exception]] = []
    client = RegistryClient(store, on_error=lambda v, e: errors.append((v, e)))
    assert client.poll() is None  # no directory yet
    newest_good: RegistrySnapshot | None = None
    bad: list[int] = []
    for version, item in enumerate(versions_written, 1):
        if isinstance(item, RegistrySnapshot):
            good = RegistrySnapshot(version, item.subnets, item.nodes, item.api_boundary_nodes, "x")
            put_raw(store, version, as_bytes(good.to_json()))
            newest_good = good
        else:
            put_raw(store, version, item)
            try:
                newest_good = store.read(version)  # a random content may be valid after all
            except RegistryFormatError:
                bad.append(version)
        for _ in range(2):  # a second poll changes nothing and reports nothing new
            assert client.poll() == newest_good
            assert client.snapshot == newest_good
    assert sorted(v for v, _ in errors) == bad
    assert all(isinstance(e, RegistryFormatError) for _, e in errors)


class _Unreadable:
    """A source whose directory cannot be listed."""

    blocking = False

    def latest_version(self) -> int:
        raise PermissionError(13, "Permission denied", "/registry")

    def read(self, version: int) -> RegistrySnapshot:
        raise AssertionError("never called")


def test_the_client_survives_an_unreadable_source(scratch: Path) -> None:
    store = new_store(scratch)
    first = RegistrySnapshot(1)
    store.write(first)
    errors: list[int] = []
    client = RegistryClient(store, on_error=lambda v, e: errors.append(v))
    assert client.poll() == first
    client.source = _Unreadable()
    assert client.poll() == first
    assert errors == [0]


@settings(max_examples=3, deadline=None)
@given(st.sampled_from([b"[" * 100_000, b'{"version": ' + b"1" * 5_000 + b"}"]))
@example(b"[" * 100_000)
def test_the_client_survives_pathological_json(scratch: Path, content: bytes) -> None:
    store = new_store(scratch)
    store.write(RegistrySnapshot(1))
    client = RegistryClient(store)
    assert client.poll() == RegistrySnapshot(1)
    put_raw(store, 2, content)
    assert client.poll() == RegistrySnapshot(1)
