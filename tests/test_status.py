"""The status model's CBOR encoding and the decoder every component uses."""

from __future__ import annotations

import cbor2
import pytest

from harness.node.status import (
    StatusDecodeError,
    StatusResponse,
    decode_status,
    encode_status,
)


def test_encoding_is_self_described_and_leaves_out_unknown_fields() -> None:
    body = encode_status(StatusResponse(ic_api_version="0.18.0", replica_health_status="starting"))
    assert body[:3] == b"\xd9\xd9\xf7"
    assert dict(cbor2.loads(body)) == {
        "ic_api_version": "0.18.0",
        "replica_health_status": "starting",
    }


def test_round_trip_keeps_every_field_and_extra_ones() -> None:
    status = StatusResponse(
        ic_api_version="0.18.0",
        root_key=b"\x30" * 133,
        impl_version="1.2.3",
        impl_hash="ab" * 32,
        replica_health_status="healthy",
        certified_height=42,
        extra={"impl_source": "harness"},
    )
    decoded = decode_status(encode_status(status))
    assert decoded == status
    assert decoded.is_healthy


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "an empty body"),
        (cbor2.dumps({"a": 1}), "not self-described CBOR"),
        (b"\xd9\xd9\xf7\xff\xff", "not valid CBOR"),
        (cbor2.dumps(cbor2.CBORTag(55799, [1, 2])), "not a CBOR map but an array"),
        (cbor2.dumps(cbor2.CBORTag(55799, {1: 2})), "non-text key 1"),
        (cbor2.dumps(cbor2.CBORTag(55799, {"certified_height": "7"})), "should be int"),
        (cbor2.dumps(cbor2.CBORTag(55799, {"certified_height": True})), "should be int"),
        (cbor2.dumps(cbor2.CBORTag(55799, {"root_key": "text"})), "should be bytes"),
    ],
)
def test_bad_bodies_are_rejected_with_the_reason(body: bytes, message: str) -> None:
    with pytest.raises(StatusDecodeError, match=message):
        decode_status(body)
