"""The replica's `/api/v2/status` response: one typed model, its CBOR encoding and decoding.

The encoding follows the IC: CBOR self-describe tag 55799 (bytes ``d9 d9 f7``) wrapping a map
with text keys, optional fields left out when unknown. The decoder is the one place that turns
a status body back into a `StatusResponse`; the replica, ic-gateway, ic-boundary and the driver
all use it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

SELF_DESCRIBE_TAG = 55799
SELF_DESCRIBE_PREFIX = b"\xd9\xd9\xf7"
CONTENT_TYPE_CBOR = "application/cbor"
IC_API_VERSION = "0.18.0"
STATUS_PATH = "/api/v2/status"

# CORS headers the IC's public endpoint puts on its responses.
CORS_HEADERS: tuple[tuple[str, str], ...] = (
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "POST, GET"),
    ("access-control-allow-headers", "Accept, Authorization, Content-Type"),
)


class ReplicaHealthStatus(enum.StrEnum):
    """Health states of a replica, in the order a starting replica goes through them."""

    STARTING = "starting"
    WAITING_FOR_CERTIFIED_STATE = "waiting_for_certified_state"
    WAITING_FOR_ROOT_DELEGATION = "waiting_for_root_delegation"
    CERTIFIED_STATE_BEHIND = "certified_state_behind"
    HEALTHY = "healthy"


class StatusDecodeError(ValueError):
    """A status body that is not the IC's self-described CBOR status record."""


# Field name -> accepted Python type once decoded; every field is optional.
_FIELD_TYPES: dict[str, type] = {
    "ic_api_version": str,
    "root_key": bytes,
    "impl_version": str,
    "impl_hash": str,
    "replica_health_status": str,
    "certified_height": int,
}


@dataclass(frozen=True)
class StatusResponse:
    """A decoded `/api/v2/status` record. `extra` holds implementation-specific fields."""

    ic_api_version: str | None = None
    root_key: bytes | None = None
    impl_version: str | None = None
    impl_hash: str | None = None
    replica_health_status: str | None = None
    certified_height: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_healthy(self) -> bool:
        return self.replica_health_status == ReplicaHealthStatus.HEALTHY


def encode_status(status: StatusResponse) -> bytes:
    """Encode as the IC does: tag 55799 around a map of the fields that are known."""
    record: dict[str, Any] = {
        name: getattr(status, name) for name in _FIELD_TYPES if getattr(status, name) is not None
    }
    record.update(status.extra)
    return bytes(cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE_TAG, record)))


def decode_status(body: bytes) -> StatusResponse:
    """Decode a status body; raise `StatusDecodeError` naming what is wrong with it."""
    if not body.startswith(SELF_DESCRIBE_PREFIX):
        raise StatusDecodeError(
            f"status body is not self-described CBOR: expected tag {SELF_DESCRIBE_TAG} "
            f"(bytes d9d9f7), got {body[:16].hex() or 'an empty body'}"
        )
    try:
        value = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise StatusDecodeError(f"status body is not valid CBOR: {exc}") from exc
    if isinstance(value, cbor2.CBORTag) and value.tag == SELF_DESCRIBE_TAG:
        value = value.value
    if not isinstance(value, Mapping):
        kind = "an array" if isinstance(value, list | tuple) else type(value).__name__
        raise StatusDecodeError(f"status body is not a CBOR map but {kind}")
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise StatusDecodeError(f"status record has a non-text key {_shown(key)}")
        expected = _FIELD_TYPES.get(key)
        if expected is None:
            extra[key] = item
            continue
        if not isinstance(item, expected) or (expected is int and isinstance(item, bool)):
            raise StatusDecodeError(
                f"status field {key!r} should be {expected.__name__}, "
                f"got {type(item).__name__} {_shown(item)}"
            )
        known[key] = item
    return StatusResponse(**known, extra=extra)


def _shown(value: Any) -> str:
    """`repr` for an error message, short, and safe for integers too long to print."""
    try:
        text = repr(value)
    except ValueError:  # int above sys.get_int_max_str_digits()
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= 80 else f"{text[:77]}..."
