"""Bad `/api/v2/status` bodies, property-based: random bytes, malformed CBOR, wrong field types,
missing fields, truncation.

`decode_status` gives a `StatusResponse` whose known fields have their documented types, or
raises `StatusDecodeError` saying what is wrong; never another exception. Valid records
round-trip through `encode_status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.node.status import (
    SELF_DESCRIBE_PREFIX,
    SELF_DESCRIBE_TAG,
    ReplicaHealthStatus,
    StatusDecodeError,
    StatusResponse,
    decode_status,
    encode_status,
)

FIELD_TYPES: dict[str, type] = {
    "ic_api_version": str,
    "root_key": bytes,
    "impl_version": str,
    "impl_hash": str,
    "replica_health_status": str,
    "certified_height": int,
}

# CBOR values that decode back to themselves (cbor2 gives lists for arrays).
cbor_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=12),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=4,
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "ic_api_version": st.text(max_size=10),
    "root_key": st.binary(max_size=140),
    "impl_version": st.text(max_size=10),
    "impl_hash": st.text(max_size=64),
    "replica_health_status": st.sampled_from([s.value for s in ReplicaHealthStatus])
    | st.text(max_size=10),
    "certified_height": st.integers(min_value=0, max_value=2**64 - 1),
}


@st.composite
def statuses(draw: st.DrawFn) -> StatusResponse:
    """A valid record: any subset of the known fields, and extra fields of any CBOR value."""
    known = {name: draw(st.none() | values) for name, values in field_values.items()}
    extra = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in FIELD_TYPES), cbor_values, max_size=3
        )
    )
    return StatusResponse(**known, extra=extra)


WRONG_VALUES: dict[type, st.SearchStrategy[Any]] = {
    str: st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=4)),
    bytes: st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4)),
    int: st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=4)),
}


def wrong_for(kind: type) -> st.SearchStrategy[Any]:
    """CBOR values that are not of `kind` (a bool is not an int here)."""
    containers = st.lists(cbor_scalars, max_size=2) | st.dictionaries(
        st.text(max_size=2), cbor_scalars, max_size=2
    )
    return WRONG_VALUES[kind] | containers


def tagged(value: Any) -> bytes:
    return bytes(cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE_TAG, value)))


def decode_or_error(body: bytes) -> StatusResponse | None:
    """The decoded record with its known fields checked, or None after a `StatusDecodeError`
    with a message."""
    try:
        status = decode_status(body)
    except StatusDecodeError as exc:
        assert str(exc)
        return None
    for name, kind in FIELD_TYPES.items():
        value = getattr(status, name)
        assert value is None or (isinstance(value, kind) and not isinstance(value, bool))
    assert all(isinstance(key, str) and key not in FIELD_TYPES for key in status.extra)
    return status


@settings(max_examples=100, deadline=None)
@given(statuses())
def test_valid_records_round_trip(status: StatusResponse) -> None:
    decoded = decode_status(encode_status(status))
    for name in FIELD_TYPES:
        assert getattr(decoded, name) == getattr(status, name)
    # cbor2 decodes what tag 55799 wraps as immutable: arrays come back as tuples.
    assert thawed(decoded.extra) == status.extra


def thawed(value: Any) -> Any:
    """`value` with tuples as lists and mappings as dicts, as it was before encoding."""
    if isinstance(value, tuple | list):
        return [thawed(item) for item in value]
    if isinstance(value, Mapping):
        return {key: thawed(item) for key, item in value.items()}
    return value


@settings(max_examples=100, deadline=None)
@given(statuses(), st.data())
def test_missing_fields_are_none(status: StatusResponse, data: st.DataObject) -> None:
    record = {n: getattr(status, n) for n in FIELD_TYPES if getattr(status, n) is not None}
    kept = data.draw(st.sets(st.sampled_from(sorted(record))) if record else st.just(set()))
    decoded = decode_status(tagged({n: v for n, v in record.items() if n in kept}))
    for name in FIELD_TYPES:
        assert getattr(decoded, name) == (record[name] if name in kept else None)


@st.composite
def wrong_fields(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid record with one known field of a wrong type, and that field's name."""
    record = {
        n: v for n, v in draw(statuses()).__dict__.items() if n in FIELD_TYPES and v is not None
    }
    name = draw(st.sampled_from(sorted(FIELD_TYPES)))
    record[name] = draw(wrong_for(FIELD_TYPES[name]))
    return tagged(record), name


@settings(max_examples=100, deadline=None)
@given(wrong_fields())
@example((tagged({"certified_height": True}), "certified_height"))
@example((tagged({"certified_height": 1.0}), "certified_height"))
@example((tagged({"root_key": "00ff"}), "root_key"))
@example((tagged({"replica_health_status": None}), "replica_health_status"))
def test_a_field_of_the_wrong_type_is_an_error_naming_it(case: tuple[bytes, str]) -> None:
    body, name = case
    with pytest.raises(StatusDecodeError) as info:
        decode_status(body)
    assert repr(name) in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80), st.booleans())
@example(b"", False)
@example(b"", True)
@example(b"\x81" * 10_000, True)  # deep nesting
@example(b"\x9f" * 10_000, True)  # deep indefinite-length nesting
@example(bytes.fromhex("7bffffffffffffffff"), True)  # a text string of 2**64-1 bytes
@example(bytes.fromhex("bbffffffffffffffff"), True)  # a map of 2**64-1 pairs
@example(bytes.fromhex("c11bffffffffffffffff"), True)  # an epoch date in year 10**11
@example(bytes.fromhex("d82380"), True)  # tag 35 (regex) of an empty array
@example(bytes.fromhex("d81d00"), True)  # a shared reference to nothing
@example(bytes.fromhex("a18101f6"), True)  # a map with an array key
def test_random_bytes_are_a_status_or_an_error(body: bytes, prefixed: bool) -> None:
    decode_or_error(SELF_DESCRIBE_PREFIX + body if prefixed else body)


# Tags cbor2 turns into Python objects (dates, bignums, decimals, regexes, sets, UUIDs, IP
# addresses, ...), given well- or ill-formed content.
semantic_tags = st.sampled_from([0, 1, 2, 3, 4, 5, 30, 35, 36, 37, 100, 258, 260, 261, 1004])


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        cbor_values,
        lambda inner: (
            st.builds(cbor2.CBORTag, semantic_tags | st.integers(0, 2**16), inner)
            | st.dictionaries(st.text(max_size=4) | st.sampled_from(sorted(FIELD_TYPES)), inner)
        ),
        max_leaves=6,
    ),
    st.booleans(),
)
def test_malformed_records_are_a_status_or_an_error(value: Any, wrap: bool) -> None:
    try:
        body = tagged(value) if wrap else bytes(cbor2.dumps(value))
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return  # cbor2 refused to encode it: nothing to decode
    decode_or_error(body)


@settings(max_examples=100, deadline=None)
@given(statuses(), st.data())
def test_a_truncated_body_is_an_error(status: StatusResponse, data: st.DataObject) -> None:
    body = encode_status(status)
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")
    with pytest.raises(StatusDecodeError):
        decode_status(body[:cut])


@settings(max_examples=100, deadline=None)
@given(statuses(), st.data())
def test_a_corrupted_body_is_a_status_or_an_error(
    status: StatusResponse, data: st.DataObject
) -> None:
    body = bytearray(encode_status(status))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        where = data.draw(st.integers(0, len(body) - 1), label="where")
        body[where] = data.draw(st.integers(0, 255), label="byte")
    decode_or_error(bytes(body))


@settings(max_examples=5, deadline=None)
@given(st.integers(4_400, 6_000), st.sampled_from(["ic_api_version", "root_key", "key"]))
@example(5_000, "ic_api_version")
@example(5_000, "key")
def test_a_huge_bignum_in_the_wrong_place_is_an_error(digits: int, where: str) -> None:
    huge = 10 ** (digits - 1)
    record: dict[Any, Any] = {huge: 1} if where == "key" else {where: huge}
    with pytest.raises(StatusDecodeError):
        decode_status(tagged(record))
