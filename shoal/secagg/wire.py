"""The byte format of secure-aggregation messages: small, self-describing, never pickled.

``b"SAG1" | u32 header length | JSON header | raw uint32 vector (optional)``. Byte strings
in the header travel as hex. :func:`unpack` checks the magic, the lengths, the kind and
the vector's size before anything is used, and raises :class:`WireFormatError`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from shoal.errors import WireFormatError

MAGIC = b"SAG1"
MAX_HEADER = 64 * 2**20  # share lists of a few thousand clients fit easily


def pack(kind: str, fields: dict[str, Any], vector: np.ndarray | None = None) -> bytes:
    header = json.dumps(
        {"kind": kind, "fields": fields, "n": 0 if vector is None else int(vector.size)}
    ).encode()
    body = b"" if vector is None else np.ascontiguousarray(vector, dtype="<u4").tobytes()
    return MAGIC + struct.pack("<I", len(header)) + header + body


def unpack(data: bytes, kind: str, max_vector: int = 2**31) -> tuple[dict[str, Any], np.ndarray | None]:
    """The fields and vector of a ``kind`` message; anything else is a WireFormatError."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireFormatError("not a secure-aggregation message")
    (size,) = struct.unpack("<I", data[4:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise WireFormatError("secure-aggregation header length is out of bounds")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"secure-aggregation header is not JSON: {exc}") from None
    if (
        not isinstance(header, dict)
        or header.get("kind") != kind
        or not isinstance(header.get("fields"), dict)
    ):
        raise WireFormatError(
            f"expected a {kind!r} message, got {header.get('kind') if isinstance(header, dict) else '?'}"
        )
    n = header.get("n")
    body = data[8 + size :]
    if not isinstance(n, int) or n < 0 or n > max_vector or len(body) != 4 * n:
        raise WireFormatError(f"{kind}: vector length does not match its header")
    vector = np.frombuffer(body, dtype="<u4").copy() if n else None
    return header["fields"], vector


def kind_of(data: bytes) -> str:
    """The kind a message claims to be (validated again by :func:`unpack`)."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireFormatError("not a secure-aggregation message")
    (size,) = struct.unpack("<I", data[4:8])
    try:
        header = json.loads(data[8 : 8 + min(size, MAX_HEADER)])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireFormatError("secure-aggregation header is not JSON") from None
    kind = header.get("kind") if isinstance(header, dict) else None
    if not isinstance(kind, str):
        raise WireFormatError("secure-aggregation message without a kind")
    return kind


def hexed(value: bytes) -> str:
    return value.hex()


def unhexed(value: Any, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise WireFormatError("expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise WireFormatError("malformed hex string") from None
    if length is not None and len(raw) != length:
        raise WireFormatError(f"expected {length} bytes, got {len(raw)}")
    return raw
