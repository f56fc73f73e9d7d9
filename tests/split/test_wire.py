"""The split wire codec: exact sizes, round trips, and refusal of anything malformed."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import messages as loop_messages
from shoal.errors import WireFormatError
from shoal.split import (
    Ack,
    Activations,
    DeviceWeights,
    Gradients,
    OutputGradients,
    Ready,
    ServerOutput,
    SplitMessage,
    Turn,
    Wait,
    decode,
    encode,
    encoded_size,
)

LIMIT = 1 << 20
T = np.arange(12, dtype=np.float32).reshape(3, 4)
EXAMPLES: list[SplitMessage] = [
    Ready("dev-1"),
    Turn(2, "dev-1", 2**62, 1, 32, np.ones(7, np.float32)),
    Wait("dev-1", 200, done=True),
    Activations(2, "dev-1", 5, T, np.array([0, 3, 9], np.int64)),
    Activations(2, "dev-1", 5, T),
    Gradients(2, "dev-1", 5, T),
    ServerOutput(2, "dev-1", 5, T),
    OutputGradients(2, "dev-1", 5, T),
    DeviceWeights(2, "dev-1", np.ones(7, np.float32)),
    Ack(2, "dev-1", False, "labels out of range"),
]


def _fields(msg: SplitMessage) -> list[object]:
    return [getattr(msg, n) for n in msg._WIRE]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_with_its_exact_size(msg: SplitMessage) -> None:
    data = encode(msg)
    assert encoded_size(msg) == len(data)
    back = decode(data, LIMIT)
    assert type(back) is type(msg)
    for a, b in zip(_fields(msg), _fields(back), strict=True):
        if isinstance(a, np.ndarray):
            assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
        else:
            assert a == b


def _tamper(msg: SplitMessage, edit: dict[str, object]) -> bytes:
    data = encode(msg)
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + hlen])
    for path, value in edit.items():
        node = header
        *parents, leaf = path.split("/")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[leaf] = value
    head = json.dumps(header).encode()
    return data[:4] + struct.pack("<I", len(head)) + head + data[8 + hlen :]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"type": "TrainTask"}, "unknown split message type"),
        ({"fields/batch": True}, "must be int"),
        ({"fields/batch": "5"}, "must be int"),
        ({"fields/extra": 1}, "unexpected entries"),
        ({"fields/round": -1}, "invalid Gradients"),
        ({"arrays/0/dtype": "|O"}, "not allowed"),
        ({"arrays/0/dtype": "<f8"}, "not allowed"),
        ({"arrays/0/shape": [3, 5]}, "runs past the end"),
        ({"arrays/0/shape": [3, 3]}, "trailing bytes"),
        ({"arrays/0/offset": 4}, "offset"),
        ({"arrays/0/name": "gradient"}, "missing array 'tensor'"),
    ],
)
def test_a_tampered_header_is_refused_with_a_reason(edit: dict[str, object], match: str) -> None:
    with pytest.raises(WireFormatError, match=match):
        decode(_tamper(Gradients(2, "d", 5, T), edit), LIMIT)


def test_an_array_under_a_scalar_fields_name_is_refused() -> None:
    acts = Activations(0, "d", 0, T, np.zeros(3, np.int64))
    with pytest.raises(WireFormatError, match=r"unexpected entries \['round'\]"):
        decode(_tamper(acts, {"arrays/1/name": "round"}), LIMIT)


def test_a_missing_array_is_refused_but_optional_labels_may_be_absent() -> None:
    with pytest.raises(WireFormatError, match="missing array 'tensor'"):
        decode(_tamper(Gradients(2, "d", 5, T), {"arrays": []})[: -T.nbytes], LIMIT)
    assert decode(encode(Activations(0, "d", 0, T)), LIMIT).labels is None  # type: ignore[union-attr]


def test_the_two_codecs_do_not_read_each_others_messages() -> None:
    with pytest.raises(WireFormatError, match="bad magic"):
        loop_messages.decode(encode(Ready("d")))
    task = loop_messages.TrainTask(0, "d", np.ones(3, np.float32), 0)
    with pytest.raises(WireFormatError, match="bad magic"):
        decode(loop_messages.encode(task), LIMIT)


def test_the_size_limit_is_checked_first() -> None:
    data = encode(Gradients(0, "d", 0, T))
    with pytest.raises(WireFormatError, match="exceeds the limit"):
        decode(data, len(data) - 1)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_truncation_and_bit_flips_never_escape_as_other_errors(data: st.DataObject) -> None:
    msg = data.draw(st.sampled_from(EXAMPLES))
    raw = bytearray(encode(msg))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(WireFormatError):  # anything else escaping fails the test
        decode(bytes(raw), LIMIT)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(WireFormatError):
        decode(b"SHS1" + raw, LIMIT)
