"""The byte format of secure-aggregation messages, and one validated reader per message kind.

``b"SAG1" | u32 header length | JSON header | vector (optional)``. Byte strings in the
header travel as hex. The vector is raw little-endian uint32, or, in a ring of ``R < 32``
bits, its entries' low ``R`` bits packed end to end (least significant first, the last
byte's spare bits zero): ``ceil(n R / 8)`` bytes, with ``"bits": R`` in the header.
:func:`unpack` checks the magic, the lengths, the kind and the vector's size and width;
each ``read_<kind>`` then checks every field (types, sizes, ranges, duplicates) and
returns a frozen dataclass, so neither protocol half ever indexes an unchecked JSON
value. Anything wrong is a :class:`WireFormatError` naming the field.

Kinds, in protocol order (server -> client, then the answer; Bonawitz et al. 2017, Fig. 4):
``setup -> advertise``, ``roster -> shares``, ``deliver -> ready``, (``masked``, sent with
the update), ``consistency -> signed``, ``unmask -> unmasked``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.errors import WireFormatError
from shoal.secagg.shamir import PRIME, SHARE_BYTES

MAGIC = b"SAG1"
MAX_HEADER = 64 * 2**20  # share lists of a few thousand clients fit easily
MAX_INDEX = 2**32 - 1  # client indices are Shamir points in [1, 2^32)
RING_BITS, MIN_RING_BITS = 32, 8  # the ring of masked inputs: Z_2^R (crypto.RING_BITS)
KEY_BYTES = 32  # X25519 and Ed25519 public keys, SHA-256 commitments
SIGNATURE_BYTES = 64  # Ed25519
SHARE_BODY_BYTES = 8 + 2 * SHARE_BYTES  # sender u32 | recipient u32 | share of s | share of b
SEALED_BYTES = 12 + SHARE_BODY_BYTES + 16  # AES-GCM nonce | ciphertext | tag


# -- framing -------------------------------------------------------------------------------
def pack_bits(vector: np.ndarray, bits: int) -> bytes:
    """The low ``bits`` of each uint32 entry, end to end, least significant bit first."""
    words = np.ascontiguousarray(vector, dtype="<u4").view(np.uint8).reshape(-1, 4)
    # (n, 4) bytes -> (n, 32) bits, low first -> keep (n, bits) -> one stream
    spread = np.unpackbits(words, axis=1, bitorder="little")[:, :bits]
    return np.packbits(spread.reshape(-1), bitorder="little").tobytes()


def unpack_bits(body: bytes, bits: int, n: int) -> np.ndarray:
    """The ``n`` uint32 entries :func:`pack_bits` made; WireFormatError unless the body is
    exactly ``ceil(n bits / 8)`` bytes with zero spare bits (one encoding per vector)."""
    if len(body) != -(-n * bits // 8):
        raise WireFormatError(f"a vector of {n} entries at {bits} bits is {-(-n * bits // 8)} bytes")
    stream = np.unpackbits(np.frombuffer(body, np.uint8), bitorder="little")
    if stream[n * bits :].any():
        raise WireFormatError("the packed vector's spare bits are not zero")
    spread = np.zeros((n, 32), np.uint8)
    spread[:, :bits] = stream[: n * bits].reshape(n, bits)
    return np.packbits(spread, axis=1, bitorder="little").reshape(-1).view("<u4").astype(np.uint32)


def pack(kind: str, fields: dict[str, Any], vector: np.ndarray | None = None, bits: int = RING_BITS) -> bytes:
    head: dict[str, Any] = {"kind": kind, "fields": fields, "n": 0 if vector is None else int(vector.size)}
    if bits != RING_BITS:  # absent: 32, the format before rings could narrow
        head["bits"] = bits
    header = json.dumps(head).encode()
    if vector is None:
        body = b""
    elif bits == RING_BITS:
        body = np.ascontiguousarray(vector, dtype="<u4").tobytes()
    else:
        body = pack_bits(vector, bits)
    return MAGIC + struct.pack("<I", len(header)) + header + body


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; a second share for one client would
    # silently replace the first, so the message is refused instead
    out = dict(pairs)
    if len(out) != len(pairs):
        raise WireFormatError("secure-aggregation header repeats a key (duplicate entries)")
    return out


def _no_constant(name: str) -> Any:
    raise WireFormatError(f"secure-aggregation header holds {name}, which JSON does not allow")


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The parsed JSON header and the raw vector bytes after it."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireFormatError("not a secure-aggregation message")
    (size,) = struct.unpack("<I", data[4:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise WireFormatError("secure-aggregation header length is out of bounds")
    try:
        header = json.loads(data[8 : 8 + size], object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, or an integer of 10^5 digits
        raise WireFormatError(f"secure-aggregation header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise WireFormatError("secure-aggregation message without a kind")
    return header, data[8 + size :]


def unpack(
    data: bytes, kind: str, max_vector: int = 2**31, bits: int = RING_BITS
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The (unchecked) fields and vector of a ``kind`` message, whose vector must be packed at
    ``bits`` per entry; prefer the ``read_*`` functions."""
    header, body = _split(data)
    if header["kind"] != kind or not isinstance(header.get("fields"), dict):
        raise WireFormatError(f"expected a {kind!r} message, got {header['kind']!r}")
    if header.get("bits", RING_BITS) != bits or ("bits" in header and bits == RING_BITS):
        raise WireFormatError(f"{kind}: the vector must be packed at {bits} bits an entry")
    n = header.get("n")
    if type(n) is not int or n < 0 or n > max_vector or len(body) != -(-n * bits // 8):
        raise WireFormatError(f"{kind}: vector length does not match its header")
    if not n:
        return header["fields"], None
    vector = np.frombuffer(body, dtype="<u4").copy() if bits == RING_BITS else unpack_bits(body, bits, n)
    return header["fields"], vector


def kind_of(data: bytes) -> str:
    """The kind a message claims to be (validated again by its reader)."""
    kind: str = _split(data)[0]["kind"]
    return kind


# -- field checks --------------------------------------------------------------------------
def _get(f: dict[str, Any], name: str) -> Any:
    if name not in f:
        raise WireFormatError(f"missing field {name!r}")
    return f[name]


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:  # type(): a JSON true is not the index 1
        raise WireFormatError(f"{name} must be an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def _float(value: Any, name: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise WireFormatError(f"{name} must be a finite number > 0, got {value!r:.40}")
    return float(value)


def _indices(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise WireFormatError(f"{name} must be a list of client indices")
    out = tuple(_int(v, name, 1, MAX_INDEX) for v in value)
    if len(set(out)) != len(out):
        raise WireFormatError(f"{name} lists a client twice")
    return out


def _key(text: str, name: str) -> int:
    # canonical decimal only: "01" and "1" would otherwise name one client twice
    if not (text.isascii() and text.isdigit()) or str(int(text)) != text:
        raise WireFormatError(f"{name} has a key that is not a client index: {text!r:.20}")
    return _int(int(text), name, 1, MAX_INDEX)


def _hex(value: Any, name: str, length: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * length:
        raise WireFormatError(f"{name} must be {length} bytes as hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise WireFormatError(f"{name} is not hex") from None


def _share(value: Any, name: str) -> int:
    y = int.from_bytes(_hex(value, name, SHARE_BYTES), "big")
    if y >= PRIME:  # a share is a field element; anything else is forged
        raise WireFormatError(f"{name} is not an element of the Shamir field")
    return y


def _map(value: Any, name: str, item: Callable[[Any, str], Any]) -> dict[int, Any]:
    if not isinstance(value, dict):
        raise WireFormatError(f"{name} must be a mapping of client index to value")
    return {_key(k, name): item(v, f"{name}[{k}]") for k, v in value.items()}


def _hexmap(values: dict[int, bytes]) -> dict[str, str]:
    return {str(k): v.hex() for k, v in sorted(values.items())}


def _sharemap(values: dict[int, int]) -> dict[str, str]:
    return {str(k): y.to_bytes(SHARE_BYTES, "big").hex() for k, y in sorted(values.items())}


# -- the messages --------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    round: int
    index: int
    threshold: int
    dimension: int
    neighbors: tuple[int, ...]
    bound: float
    scale: float
    ring_bits: int = RING_BITS  # inputs are masked and summed mod 2^ring_bits

    def pack(self) -> bytes:
        s = self  # field by field: dataclasses.asdict deep-copies, a cost per client per round
        fields: dict[str, Any] = {"round": s.round, "index": s.index, "threshold": s.threshold}
        fields.update(dimension=s.dimension, neighbors=list(s.neighbors), bound=s.bound, scale=s.scale)
        if s.ring_bits != RING_BITS:  # absent: 32 (the message is unchanged for the default ring)
            fields["ring_bits"] = s.ring_bits
        return pack("setup", fields)


def read_setup(data: bytes) -> Setup:
    f, _ = unpack(data, "setup", max_vector=0)
    s = Setup(
        _int(_get(f, "round"), "round", 0, 2**63),
        _int(_get(f, "index"), "index", 1, MAX_INDEX),
        _int(_get(f, "threshold"), "threshold", 1, MAX_INDEX),
        _int(_get(f, "dimension"), "dimension", 1, 2**31 - 1),
        _indices(_get(f, "neighbors"), "neighbors"),
        _float(_get(f, "bound"), "bound"),
        _float(_get(f, "scale"), "scale"),
        _int(f.get("ring_bits", RING_BITS), "ring_bits", MIN_RING_BITS, RING_BITS),
    )
    if s.index in s.neighbors:
        raise WireFormatError("a client cannot be its own neighbour")
    # (whether bound x scale fits the ring is checked where floats are encoded with them:
    # an encoder that rotates first, as distributed DP's does, keeps entries far below it)
    return s


@dataclass(frozen=True)
class PeerKeys:
    """What a client advertises: X25519 ``c`` (seals shares) and ``s`` (masks), Ed25519 ``d``
    (signs the consistency check)."""

    c_pk: bytes
    s_pk: bytes
    d_pk: bytes


@dataclass(frozen=True)
class Advertise:
    index: int
    keys: PeerKeys
    b_commit: bytes  # SHA-256 commitment to the self-mask seed (common.b_commitment)

    def pack(self) -> bytes:
        k = self.keys
        return pack("advertise", {"index": self.index, "c_pk": k.c_pk.hex(), "s_pk": k.s_pk.hex(),
                                  "d_pk": k.d_pk.hex(), "b_commit": self.b_commit.hex()})  # fmt: skip


def read_advertise(data: bytes) -> Advertise:
    f, _ = unpack(data, "advertise", max_vector=0)
    keys = PeerKeys(*(_hex(_get(f, k), k, KEY_BYTES) for k in ("c_pk", "s_pk", "d_pk")))
    return Advertise(
        _int(_get(f, "index"), "index", 1, MAX_INDEX), keys, _hex(_get(f, "b_commit"), "b_commit", KEY_BYTES)
    )


@dataclass(frozen=True)
class Roster:
    keys: dict[int, PeerKeys] = field(default_factory=dict)  # neighbour -> its advertised keys

    def pack(self) -> bytes:
        keys = {str(v): [k.c_pk.hex(), k.s_pk.hex(), k.d_pk.hex()] for v, k in sorted(self.keys.items())}
        return pack("roster", {"keys": keys})


def _peer_keys(value: Any, name: str) -> PeerKeys:
    if not isinstance(value, list) or len(value) != 3:
        raise WireFormatError(f"{name} must list three public keys")
    return PeerKeys(*(_hex(v, name, KEY_BYTES) for v in value))


def read_roster(data: bytes) -> Roster:
    f, _ = unpack(data, "roster", max_vector=0)
    return Roster(_map(_get(f, "keys"), "keys", _peer_keys))


@dataclass(frozen=True)
class Shares:
    index: int
    sealed: dict[int, bytes]  # recipient -> its share, sealed (wire.SEALED_BYTES)

    def pack(self) -> bytes:
        return pack("shares", {"index": self.index, "sealed": _hexmap(self.sealed)})


def _sealed(value: Any, name: str) -> bytes:
    return _hex(value, name, SEALED_BYTES)


def read_shares(data: bytes) -> Shares:
    f, _ = unpack(data, "shares", max_vector=0)
    return Shares(_int(_get(f, "index"), "index", 1, MAX_INDEX), _map(_get(f, "sealed"), "sealed", _sealed))


@dataclass(frozen=True)
class Deliver:
    sealed: dict[int, bytes]  # sender -> the share it sealed for this client
    sharers: tuple[int, ...]  # U2 within the client's neighbourhood, itself included

    def pack(self) -> bytes:
        return pack("deliver", {"sealed": _hexmap(self.sealed), "sharers": list(self.sharers)})


def read_deliver(data: bytes) -> Deliver:
    f, _ = unpack(data, "deliver", max_vector=0)
    return Deliver(_map(_get(f, "sealed"), "sealed", _sealed), _indices(_get(f, "sharers"), "sharers"))


@dataclass(frozen=True)
class Ready:
    index: int

    def pack(self) -> bytes:
        return pack("ready", {"index": self.index})


def read_ready(data: bytes) -> Ready:
    f, _ = unpack(data, "ready", max_vector=0)
    return Ready(_int(_get(f, "index"), "index", 1, MAX_INDEX))


@dataclass(frozen=True)
class Masked:
    index: int
    vector: np.ndarray  # (dimension,) uint32 below 2^bits: the input under its masks
    bits: int = RING_BITS  # packed at this many bits an entry: dimension * bits / 8 bytes

    def pack(self) -> bytes:
        return pack("masked", {"index": self.index}, self.vector, self.bits)


def read_masked(data: bytes, dimension: int, bits: int = RING_BITS) -> Masked:
    """A masked input of exactly ``dimension`` entries at ``bits`` each (so every entry is
    below ``2^bits`` by construction)."""
    f, y = unpack(data, "masked", max_vector=dimension, bits=bits)
    if y is None or y.shape != (dimension,):
        raise WireFormatError(f"masked input must hold {dimension} entries")
    return Masked(_int(_get(f, "index"), "index", 1, MAX_INDEX), y, bits)


@dataclass(frozen=True)
class Consistency:
    survivors: tuple[int, ...]  # U3: every client whose masked input is in the sum

    def pack(self) -> bytes:
        return pack("consistency", {"survivors": sorted(self.survivors)})


def read_consistency(data: bytes) -> Consistency:
    f, _ = unpack(data, "consistency", max_vector=0)
    return Consistency(_indices(_get(f, "survivors"), "survivors"))


@dataclass(frozen=True)
class Signed:
    index: int
    signature: bytes  # Ed25519 over common.consistency_statement(round, U3)

    def pack(self) -> bytes:
        return pack("signed", {"index": self.index, "signature": self.signature.hex()})


def read_signed(data: bytes) -> Signed:
    f, _ = unpack(data, "signed", max_vector=0)
    index = _int(_get(f, "index"), "index", 1, MAX_INDEX)
    return Signed(index, _hex(_get(f, "signature"), "signature", SIGNATURE_BYTES))


@dataclass(frozen=True)
class Unmask:
    survivors: tuple[int, ...]  # U3 again: it must be the set the client signed
    signatures: dict[int, bytes]  # neighbour -> its signature on the same U3

    def pack(self) -> bytes:
        return pack("unmask", {"survivors": sorted(self.survivors), "signatures": _hexmap(self.signatures)})


def _signature(value: Any, name: str) -> bytes:
    return _hex(value, name, SIGNATURE_BYTES)


def read_unmask(data: bytes) -> Unmask:
    f, _ = unpack(data, "unmask", max_vector=0)
    return Unmask(
        _indices(_get(f, "survivors"), "survivors"), _map(_get(f, "signatures"), "signatures", _signature)
    )


@dataclass(frozen=True)
class Unmasked:
    index: int
    s: dict[int, int]  # dropped neighbour -> this client's share of its s key
    b: dict[int, int]  # surviving neighbour -> this client's share of its self-mask seed

    def pack(self) -> bytes:
        return pack("unmasked", {"index": self.index, "s": _sharemap(self.s), "b": _sharemap(self.b)})


def read_unmasked(data: bytes) -> Unmasked:
    f, _ = unpack(data, "unmasked", max_vector=0)
    return Unmasked(
        _int(_get(f, "index"), "index", 1, MAX_INDEX),
        _map(_get(f, "s"), "s", _share),
        _map(_get(f, "b"), "b", _share),
    )


# -- the share body, inside the AES-GCM seal -----------------------------------------------
def pack_share_body(sender: int, recipient: int, s_share: int, b_share: int) -> bytes:
    return (
        struct.pack("<II", sender, recipient)
        + s_share.to_bytes(SHARE_BYTES, "big")
        + b_share.to_bytes(SHARE_BYTES, "big")
    )


def read_share_body(body: bytes) -> tuple[int, int, int, int]:
    """(sender, recipient, share of s, share of b) from an opened seal."""
    if len(body) != SHARE_BODY_BYTES:
        raise WireFormatError(f"a share body is {SHARE_BODY_BYTES} bytes, got {len(body)}")
    sender, recipient = struct.unpack("<II", body[:8])
    s_y = int.from_bytes(body[8 : 8 + SHARE_BYTES], "big")
    b_y = int.from_bytes(body[8 + SHARE_BYTES :], "big")
    if s_y >= PRIME or b_y >= PRIME:
        raise WireFormatError("a sealed share is not an element of the Shamir field")
    return sender, recipient, s_y, b_y
