from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import WireFormatError
from shoal.messages import (
    EvalResult,
    EvalTask,
    Failure,
    FailureKind,
    TrainResult,
    TrainTask,
    decode,
    encode,
    encoded_size,
)

VEC = np.arange(10, dtype=np.float32)
MESSAGES = [
    TrainTask(3, "c1", VEC, seed=42, config={"lr": 0.1, "local_epochs": 2}, arrays={"c": VEC * 2}),
    TrainResult(3, "c1", 17, {"delta": VEC, "idx": np.arange(3, dtype=np.int64)}, {"train_loss": 0.5}),
    EvalTask(3, "c2", VEC),
    EvalResult(3, "c2", 5, {"accuracy": 0.8}),
    Failure(3, "c3", FailureKind.TIMEOUT, "no answer in 30 s"),
]


def norm(v):
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tolist())
    if hasattr(v, "items"):
        return {k: norm(x) for k, x in v.items()}
    return v


def same(a, b) -> bool:
    return type(a) is type(b) and all(norm(getattr(a, n)) == norm(getattr(b, n)) for n in a._WIRE)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_and_exact_size(msg):
    data = encode(msg)
    assert len(data) == encoded_size(msg)
    assert same(decode(data), msg)


def test_arrays_travel_little_endian():
    big = np.arange(4, dtype=">f4")
    out = decode(encode(EvalTask(0, "c", big)))
    assert out.params.dtype == np.dtype("<f4") and np.array_equal(out.params, big)


def _forge(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return b"SHL1" + struct.pack("<I", len(head)) + head + body


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "bad magic"),
        (b"PKL\x80" + b"\x00" * 10, "bad magic"),
        (b"SHL1" + struct.pack("<I", 1000) + b"{}", "runs past the end"),
        (_forge({"type": "Pickle", "fields": {}, "arrays": []}), "unknown message type"),
        (
            _forge({"type": "EvalTask", "fields": {"round": 1, "client_id": "a"}, "arrays": []}),
            "missing array",
        ),
        (
            _forge(
                {
                    "type": "EvalTask",
                    "fields": {"round": True, "client_id": "a"},
                    "arrays": [{"name": "params", "dtype": "<f4", "shape": [1], "offset": 0}],
                },
                b"\0" * 4,
            ),
            "must be int",
        ),
        (
            _forge(
                {
                    "type": "EvalTask",
                    "fields": {"round": 1, "client_id": "a"},
                    "arrays": [{"name": "params", "dtype": "|O", "shape": [1], "offset": 0}],
                },
                b"\0" * 8,
            ),
            "not allowed",
        ),
        (
            _forge(
                {
                    "type": "EvalTask",
                    "fields": {"round": 1, "client_id": "a"},
                    "arrays": [{"name": "params", "dtype": "<f4", "shape": [1000], "offset": 0}],
                },
                b"\0" * 4,
            ),
            "runs past",
        ),
        (
            _forge(
                {
                    "type": "EvalTask",
                    "fields": {"round": 1, "client_id": "a"},
                    "arrays": [{"name": "params", "dtype": "<f4", "shape": [1], "offset": 0}],
                },
                b"\0" * 8,
            ),
            "trailing",
        ),
        (
            _forge(
                {
                    "type": "EvalTask",
                    "fields": {"round": -1, "client_id": "a"},
                    "arrays": [{"name": "params", "dtype": "<f4", "shape": [1], "offset": 0}],
                },
                b"\0" * 4,
            ),
            "non-negative",
        ),
        (
            _forge(
                {
                    "type": "EvalTask",
                    "fields": {"round": 1, "client_id": "a", "evil": 1},
                    "arrays": [{"name": "params", "dtype": "<f4", "shape": [1], "offset": 0}],
                },
                b"\0" * 4,
            ),
            "unexpected",
        ),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data, match):
    with pytest.raises(WireFormatError, match=match):
        decode(data)


def test_oversized_message_is_refused_before_parsing():
    with pytest.raises(WireFormatError, match="exceeds the limit"):
        decode(encode(MESSAGES[0]), max_bytes=100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_escape_as_other_errors(data):
    with contextlib.suppress(WireFormatError):
        decode(b"SHL1" + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.data())
def test_truncated_or_flipped_messages_fail_cleanly(cut, data):
    raw = bytearray(encode(MESSAGES[1]))
    if data.draw(st.booleans()):
        raw = raw[: cut % len(raw)]
    else:
        raw[cut % len(raw)] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(WireFormatError):
        decode(bytes(raw))
