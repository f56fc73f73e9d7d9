"""What travels between the coordinator and a client, and its safe wire codec.

Messages are frozen dataclasses validated on construction. On the wire a message is::

    b"SHL1" | u32 little-endian header length | UTF-8 JSON header | raw array bytes

The header names the message type, its scalar fields, and for every array its dtype
(from a short allow-list, always little-endian), shape and byte range. Decoding checks
every length, offset, dtype and shape against the header and the buffer before any
array is built; nothing is ever unpickled.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final

import numpy as np

from shoal.errors import WireFormatError

Scalar = int | float | str | bool

MAGIC: Final = b"SHL1"
MAX_MESSAGE_BYTES: Final = 2**31  # 2 GiB; the network layer sets tighter limits per route
_ALLOWED_DTYPES: Final = frozenset({"<f4", "<f8", "<i4", "<i8", "<u4", "<u8", "|u1", "|i1", "<f2"})


class FailureKind(enum.StrEnum):
    ERROR = "error"  # the client raised while training or evaluating
    TIMEOUT = "timeout"  # no answer before the deadline
    DROPPED = "dropped"  # the device went away (unplugged, off Wi-Fi, killed)
    REJECTED = "rejected"  # the server refused what the client sent (malformed, wrong shape)


def _frozen_map(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(m or {}))


def _check_common(round: int, client_id: str) -> None:
    if not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")
    if not isinstance(client_id, str) or not client_id:
        raise ValueError(f"client_id must be a non-empty str, got {client_id!r}")


def _check_scalars(name: str, m: Mapping[str, Any]) -> None:
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, Scalar):
            raise ValueError(f"{name}[{k!r}] must map str to int, float, str or bool, got {v!r}")


def _check_arrays(name: str, m: Mapping[str, Any]) -> None:
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, np.ndarray):
            raise ValueError(f"{name}[{k!r}] must be a numpy array, got {type(v).__name__}")


@dataclass(frozen=True)
class TrainTask:
    """Train from ``params`` on this client's data; ``config`` carries the round's hyperparameters."""

    round: int
    client_id: str
    params: np.ndarray
    seed: int
    config: Mapping[str, Scalar] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)  # strategy extras, e.g. controls

    _WIRE: ClassVar[dict[str, str]] = {
        "round": "int",
        "client_id": "str",
        "params": "array",
        "seed": "int",
        "config": "scalars",
        "arrays": "arrays",
    }

    def __post_init__(self) -> None:
        _check_common(self.round, self.client_id)
        if not isinstance(self.params, np.ndarray) or self.params.ndim != 1:
            raise ValueError("params must be a flat numpy vector")
        object.__setattr__(self, "config", _frozen_map(self.config))
        object.__setattr__(self, "arrays", _frozen_map(self.arrays))
        _check_scalars("config", self.config)
        _check_arrays("arrays", self.arrays)


@dataclass(frozen=True)
class TrainResult:
    """A client's answer: its (transformed) update in ``payload``, weighted by ``num_examples``."""

    round: int
    client_id: str
    num_examples: int
    payload: Mapping[str, np.ndarray]  # "delta": new minus global weights, before transforms
    metrics: Mapping[str, Scalar] = field(default_factory=dict)

    _WIRE: ClassVar[dict[str, str]] = {
        "round": "int",
        "client_id": "str",
        "num_examples": "int",
        "payload": "arrays",
        "metrics": "scalars",
    }

    def __post_init__(self) -> None:
        _check_common(self.round, self.client_id)
        if not isinstance(self.num_examples, int) or self.num_examples < 0:
            raise ValueError(f"num_examples must be a non-negative int, got {self.num_examples!r}")
        object.__setattr__(self, "payload", _frozen_map(self.payload))
        object.__setattr__(self, "metrics", _frozen_map(self.metrics))
        _check_arrays("payload", self.payload)
        _check_scalars("metrics", self.metrics)


@dataclass(frozen=True)
class EvalTask:
    """Evaluate ``params`` on this client's held-out data."""

    round: int
    client_id: str
    params: np.ndarray

    _WIRE: ClassVar[dict[str, str]] = {"round": "int", "client_id": "str", "params": "array"}

    def __post_init__(self) -> None:
        _check_common(self.round, self.client_id)
        if not isinstance(self.params, np.ndarray) or self.params.ndim != 1:
            raise ValueError("params must be a flat numpy vector")


@dataclass(frozen=True)
class EvalResult:
    round: int
    client_id: str
    num_examples: int
    metrics: Mapping[str, Scalar] = field(default_factory=dict)  # "loss", "accuracy"

    _WIRE: ClassVar[dict[str, str]] = {
        "round": "int",
        "client_id": "str",
        "num_examples": "int",
        "metrics": "scalars",
    }

    def __post_init__(self) -> None:
        _check_common(self.round, self.client_id)
        if not isinstance(self.num_examples, int) or self.num_examples < 0:
            raise ValueError(f"num_examples must be a non-negative int, got {self.num_examples!r}")
        object.__setattr__(self, "metrics", _frozen_map(self.metrics))
        _check_scalars("metrics", self.metrics)


@dataclass(frozen=True)
class Failure:
    """A client that did not deliver: a value for the strategy, never an exception."""

    round: int
    client_id: str
    kind: FailureKind
    reason: str

    _WIRE: ClassVar[dict[str, str]] = {
        "round": "int",
        "client_id": "str",
        "kind": "str",
        "reason": "str",
    }

    def __post_init__(self) -> None:
        _check_common(self.round, self.client_id)
        object.__setattr__(self, "kind", FailureKind(self.kind))


Message = TrainTask | TrainResult | EvalTask | EvalResult | Failure
_TYPES: Final[dict[str, type[Message]]] = {
    cls.__name__: cls for cls in (TrainTask, TrainResult, EvalTask, EvalResult, Failure)
}


def _array_entries(msg: Message) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    for name, kind in msg._WIRE.items():
        value = getattr(msg, name)
        if kind == "array":
            out.append((name, value))
        elif kind == "arrays":
            out.extend((f"{name}.{k}", v) for k, v in value.items())
    return out


def _header(msg: Message) -> tuple[bytes, list[np.ndarray]]:
    scalars: dict[str, Any] = {}
    for name, kind in msg._WIRE.items():
        if kind in ("int", "str"):
            scalars[name] = str(getattr(msg, name)) if kind == "str" else getattr(msg, name)
        elif kind == "scalars":
            scalars[name] = dict(getattr(msg, name))
    specs, arrays = encode_arrays(_array_entries(msg))
    header = {"type": type(msg).__name__, "fields": scalars, "arrays": specs}
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode(), arrays


def encoded_size(msg: Message) -> int:
    """Exact length of ``encode(msg)``, computed without copying the arrays."""
    return framed_size(MAGIC, *_header(msg))


def encode(msg: Message) -> bytes:
    return frame(MAGIC, *_header(msg))


def framed_size(magic: bytes, head: bytes, arrays: Sequence[np.ndarray]) -> int:
    """The length of :func:`frame`'s bytes, without copying the arrays."""
    return len(magic) + 4 + len(head) + sum(a.nbytes for a in arrays)


def frame(magic: bytes, head: bytes, arrays: Sequence[np.ndarray]) -> bytes:
    """A codec's message: its 4-byte magic, the JSON header's length (u32) and the header,
    then the arrays back to back. Shared with split learning's codec (its own magic)."""
    return b"".join([magic, struct.pack("<I", len(head)), head, *(a.tobytes() for a in arrays)])


def unframe(
    data: bytes | bytearray | memoryview, magic: bytes, max_bytes: int, what: str, bad_magic: str
) -> tuple[Any, memoryview]:
    """:func:`frame`'s header (parsed JSON, any type: the caller checks it) and the arrays'
    bytes; WireFormatError naming ``what`` if it is too long, has another magic
    (``bad_magic`` says what it is not), or a header that runs past the end or is not JSON."""
    buf = memoryview(data).cast("B")
    if len(buf) > max_bytes:
        raise WireFormatError(f"{what} of {len(buf)} bytes exceeds the limit of {max_bytes}")
    if len(buf) < 8 or bytes(buf[:4]) != magic:
        raise WireFormatError(bad_magic)
    (hlen,) = struct.unpack("<I", buf[4:8])
    if 8 + hlen > len(buf):
        raise WireFormatError(f"header length {hlen} runs past the end of a {len(buf)}-byte message")
    try:
        header = json.loads(bytes(buf[8 : 8 + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"message header is not valid JSON: {exc}") from exc
    return header, buf[8 + hlen :]


def decode(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse and validate a message. Raises :class:`WireFormatError` on anything malformed."""
    bad_magic = "not a shoal message (bad magic); is the peer running shoal >= 0.1?"
    header, body = unframe(data, MAGIC, max_bytes, "message", bad_magic)
    if not isinstance(header, dict) or header.get("type") not in _TYPES:
        raise WireFormatError(f"unknown message type; expected one of {sorted(_TYPES)}")
    cls = _TYPES[header["type"]]
    arrays = decode_arrays(header.get("arrays"), body)
    kwargs = _decode_fields(cls, header.get("fields"), arrays)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise WireFormatError(f"invalid {cls.__name__}: {exc}") from exc


def encode_arrays(
    entries: Iterable[tuple[str, np.ndarray]], allowed: Collection[str] = _ALLOWED_DTYPES
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """The header entries and little-endian arrays of ``entries``, back to back (what
    :func:`decode_arrays` reads); a dtype outside ``allowed`` is refused."""
    specs: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    offset = 0
    for key, arr in entries:
        le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        if le.dtype.str not in allowed:
            raise WireFormatError(f"array {key} has dtype {le.dtype.str}, not one of {sorted(allowed)}")
        specs.append({"name": key, "dtype": le.dtype.str, "shape": list(le.shape), "offset": offset})
        arrays.append(le)
        offset += le.nbytes
    return specs, arrays


def decode_arrays(
    specs: Any, body: memoryview, allowed: Collection[str] = _ALLOWED_DTYPES
) -> dict[str, np.ndarray]:
    """The arrays a header's ``arrays`` entries describe, read from ``body`` without a copy,
    each entry checked before use (unique name, a dtype from ``allowed``, a shape of
    non-negative ints, offsets back to back, nothing past or after the end). Shared with
    split learning's codec (``shoal/split/wire.py``), which allows fewer dtypes."""
    if not isinstance(specs, list):
        raise WireFormatError("header 'arrays' must be a list")
    out: dict[str, np.ndarray] = {}
    expected_offset = 0
    for spec in specs:
        if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape", "offset"}:
            raise WireFormatError("each array entry needs exactly name, dtype, shape, offset")
        name, dtype, shape, offset = spec["name"], spec["dtype"], spec["shape"], spec["offset"]
        if not isinstance(name, str) or name in out:
            raise WireFormatError(f"array name {name!r} is not a unique string")
        if dtype not in allowed:
            raise WireFormatError(f"array {name!r}: dtype {dtype!r} not allowed")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise WireFormatError(f"array {name!r}: shape must be a list of non-negative ints")
        if type(offset) is not int or offset != expected_offset:
            raise WireFormatError(f"array {name!r}: offset {offset!r}, expected {expected_offset}")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if offset + nbytes > len(body):
            raise WireFormatError(f"array {name!r} ({nbytes} bytes) runs past the end of the message")
        out[name] = np.frombuffer(body[offset : offset + nbytes], dtype=dtype).reshape(shape)
        expected_offset = offset + nbytes
    if expected_offset != len(body):
        raise WireFormatError(f"{len(body) - expected_offset} trailing bytes after the last array")
    return out


def _decode_fields(cls: type[Message], raw: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise WireFormatError("header 'fields' must be an object")
    kwargs: dict[str, Any] = {}
    used: set[str] = set()
    for name, kind in cls._WIRE.items():
        if kind == "array":
            if name not in arrays:
                raise WireFormatError(f"{cls.__name__} is missing array {name!r}")
            kwargs[name] = arrays[name]
            used.add(name)
        elif kind == "arrays":
            prefix = name + "."
            kwargs[name] = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            used.update(k for k in arrays if k.startswith(prefix))
        else:
            if name not in raw:
                raise WireFormatError(f"{cls.__name__} is missing field {name!r}")
            value = raw[name]
            want = {"int": int, "str": str, "scalars": dict}[kind]
            if type(value) is not want:  # bool is not an int here, on purpose
                raise WireFormatError(f"{cls.__name__}.{name} must be {want.__name__}")
            kwargs[name] = value
    unknown = (set(raw) - set(cls._WIRE)) | (set(arrays) - used)
    if unknown:
        raise WireFormatError(f"{cls.__name__} has unexpected entries {sorted(unknown)}")
    return kwargs
