"""The root key the replica reports in `/api/v2/status`: loaded from a DER file or a fixed default.

The IC reports the NNS threshold public key, a BLS12-381 G2 point, DER-encoded: a fixed
37-byte prefix (algorithm identifiers) followed by the 96-byte compressed point, 133 bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DER_PREFIX = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100"
)
KEY_LENGTH = 96
DER_LENGTH = len(DER_PREFIX) + KEY_LENGTH

# Flag bits of the first byte of a compressed BLS12-381 point (zkcrypto serialization).
COMPRESSION_FLAG = 0x80
INFINITY_FLAG = 0x40

# Every replica of a testnet without a root key file derives the same key from this seed, so
# agents that pin the first key they see keep working across nodes and restarts.
DEFAULT_SEED = b"harness replica stub root key v1"


class RootKeyError(ValueError):
    """A root key file that is missing, unreadable or not a DER BLS12-381 G2 public key."""


def default_root_key() -> bytes:
    """A stable DER root key derived from `DEFAULT_SEED`.

    The 96 bytes have the compression flag set and the infinity flag clear, so they look like
    a compressed point to parsers that check flags; they are not a point on the curve, which
    nothing here verifies (the stub signs no certificates).
    """
    raw = bytearray(hashlib.sha512(DEFAULT_SEED).digest() + hashlib.sha256(DEFAULT_SEED).digest())
    del raw[KEY_LENGTH:]
    raw[0] = (raw[0] | COMPRESSION_FLAG) & ~INFINITY_FLAG
    return DER_PREFIX + bytes(raw)


def check_root_key(der: bytes, source: str) -> bytes:
    """Return `der` if it is a 133-byte DER G2 key with the IC prefix; raise `RootKeyError`."""
    if len(der) != DER_LENGTH:
        raise RootKeyError(
            f"root key {source}: expected {DER_LENGTH} bytes (DER of a BLS12-381 G2 public "
            f"key), got {len(der)}"
        )
    if not der.startswith(DER_PREFIX):
        raise RootKeyError(
            f"root key {source}: does not start with the IC's DER prefix {DER_PREFIX.hex()} "
            f"(starts with {der[: len(DER_PREFIX)].hex()})"
        )
    return der


def load_root_key(path: Path) -> bytes:
    """Read and check a DER root key file."""
    try:
        der = path.read_bytes()
    except OSError as exc:
        raise RootKeyError(f"root key file {path}: cannot read it: {exc.strerror}") from None
    return check_root_key(der, f"file {path}")
