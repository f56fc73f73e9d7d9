"""Split-learning messages on the wire, by the principles of :mod:`shoal.messages`.

::

    b"SHS1" | u32 little-endian header length | UTF-8 JSON header | raw array bytes

The header names the type, its scalar fields and, per array, its dtype (float32 or int64,
little-endian), shape and offset. Decoding checks the magic, every length and offset, each
dtype against the allow-list, each field's type and that no field is missing or unknown,
before a message is built; nothing is unpickled. It has its own magic because its types
are not the round loop's: a split message handed to :func:`shoal.messages.decode` (or the
reverse) is refused by its magic, not misread.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np

from shoal.errors import WireFormatError
from shoal.messages import decode_arrays, encode_arrays, frame, framed_size, unframe
from shoal.split.messages import MESSAGE_TYPES, SplitMessage

MAGIC: Final = b"SHS1"
_DTYPES: Final = frozenset({"<f4", "<i8"})  # tensors and labels; nothing else travels here
_TYPES: Final = {cls.__name__: cls for cls in MESSAGE_TYPES}
_SCALARS: Final[dict[str, type]] = {"int": int, "bool": bool, "str": str}


def _arrays(msg: SplitMessage) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, kind in msg._WIRE.items():
        value = getattr(msg, name)
        if kind.startswith("array") and value is not None:
            out.append((name, value))
    return out


def _header(msg: SplitMessage) -> tuple[bytes, list[np.ndarray]]:
    fields = {n: getattr(msg, n) for n, kind in msg._WIRE.items() if kind in _SCALARS}
    specs, arrays = encode_arrays(_arrays(msg), _DTYPES)
    header = {"type": type(msg).__name__, "fields": fields, "arrays": specs}
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode(), arrays


def encoded_size(msg: SplitMessage) -> int:
    """Exact length of ``encode(msg)``, without copying the arrays."""
    return framed_size(MAGIC, *_header(msg))


def encode(msg: SplitMessage) -> bytes:
    return frame(MAGIC, *_header(msg))


def decode(data: bytes | bytearray | memoryview, max_bytes: int) -> SplitMessage:
    """A message from ``data`` of at most ``max_bytes``; WireFormatError on anything malformed."""
    header, body = unframe(
        data, MAGIC, max_bytes, "a split message", "not a split-learning message (bad magic)"
    )
    if not isinstance(header, dict) or set(header) != {"type", "fields", "arrays"}:
        raise WireFormatError("the header must hold exactly type, fields and arrays")
    cls = _TYPES.get(header["type"]) if isinstance(header["type"], str) else None
    if cls is None:
        raise WireFormatError(f"unknown split message type; expected one of {sorted(_TYPES)}")
    arrays = decode_arrays(header["arrays"], body, _DTYPES)
    kwargs = _decode_fields(cls, header["fields"], arrays)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise WireFormatError(f"invalid {cls.__name__}: {exc}") from exc


def _decode_fields(cls: type[SplitMessage], raw: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise WireFormatError("header 'fields' must be an object")
    kwargs: dict[str, Any] = {}
    for name, kind in cls._WIRE.items():
        if kind.startswith("array"):
            if name not in arrays and kind == "array":
                raise WireFormatError(f"{cls.__name__} is missing array {name!r}")
            kwargs[name] = arrays.get(name)
        else:
            if name not in raw:
                raise WireFormatError(f"{cls.__name__} is missing field {name!r}")
            if type(raw[name]) is not _SCALARS[kind]:  # bool is not an int here, on purpose
                raise WireFormatError(f"{cls.__name__}.{name} must be {kind}")
            kwargs[name] = raw[name]
    scalars = {n for n, k in cls._WIRE.items() if k in _SCALARS}
    unknown = (set(raw) - scalars) | (set(arrays) - (set(cls._WIRE) - scalars))
    if unknown:
        raise WireFormatError(f"{cls.__name__} has unexpected entries {sorted(unknown)}")
    return kwargs
