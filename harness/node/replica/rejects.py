"""What the IC answers when a request names a canister or subnet this replica does not host.

The stub hosts nothing, so every canister/subnet request ends here. Formats follow
rs/http_endpoints/public (IC0301 = `CanisterNotFound`, reject code 3 "destination invalid";
IC0404 = `SubnetNotFound`, classified as reject code 4):

- query (v2, v3):  200, CBOR ``{status: "rejected", reject_code, reject_message, error_code}``
  (the IC adds node `signatures`; the stub has no node key to sign with);
- call v2:         200, CBOR ``{reject_code, reject_message, error_code}`` (a rejection by
  the ingress filter, `CborUserError`);
- call v3, v4:     200, CBOR ``{status: "non_replicated_rejection", reject_code,
  reject_message, error_code}``;
- read_state:      404, text ``Canister <id> not found.``: the IC would return a certificate
  in which the canister's paths are absent, which the stub cannot sign; 404 with the error's
  text is how replicas map `CanisterNotFound` onto plain HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from harness.node.status import CONTENT_TYPE_CBOR, SELF_DESCRIBE_TAG

CONTENT_TYPE_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body and its content type, plus extra headers."""

    status: int
    body: bytes
    content_type: str = CONTENT_TYPE_TEXT
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, message: str, *headers: tuple[str, str]) -> Reply:
        return cls(status, message.encode(), CONTENT_TYPE_TEXT, headers)

    @classmethod
    def cbor(cls, value: Any, status: int = 200) -> Reply:
        """Self-described CBOR (tag 55799), as the IC's `Cbor` responder writes it."""
        body = cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBE_TAG, value))
        return cls(status, bytes(body), CONTENT_TYPE_CBOR)


@dataclass(frozen=True)
class UserError:
    """An IC user error: the `ICxxxx` code, its reject code and the message."""

    error_code: str
    reject_code: int
    message: str

    def fields(self) -> dict[str, Any]:
        return {
            "reject_code": self.reject_code,
            "reject_message": self.message,
            "error_code": self.error_code,
        }


def not_found(target: str, target_id: str) -> UserError:
    """The error for a `canister` or `subnet` id that this replica does not host."""
    if target == "canister":
        return UserError("IC0301", 3, f"Canister {target_id} not found.")
    return UserError("IC0404", 4, f"Subnet {target_id} not found.")


def reject(version: str, action: str, error: UserError) -> Reply:
    """The reply of endpoint `/api/<version>/.../<action>` that rejects with `error`."""
    if action == "query":
        return Reply.cbor({"status": "rejected", **error.fields()})
    if action == "call" and version == "v2":
        return Reply.cbor(error.fields())
    if action == "call":
        return Reply.cbor({"status": "non_replicated_rejection", **error.fields()})
    return Reply.text(404, error.message)
