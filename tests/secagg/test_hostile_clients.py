"""A hostile or broken device costs only itself: every malformed answer, at every stage, is
that client's drop with a reason, and a forged share never yields a wrong sum."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import ShoalError
from shoal.secagg import (
    LocalDevices,
    ProtocolError,
    SecAggClient,
    SecAggServer,
    Stage,
    ThresholdError,
    complete_graph,
    shamir,
)
from shoal.secagg.wire import MAGIC, kind_of, pack, unpack

D = 32
IDS = [f"c{i}" for i in range(6)]  # 5 neighbours each; t = 4 > 2 * 5 / 3
T = 4
Edit = Callable[[dict[str, Any], np.ndarray | None], bytes]


def raw(kind: str, header_fields: str, vector: bytes = b"") -> bytes:
    """A message whose JSON header is written by hand (for duplicate keys and the like)."""
    header = f'{{"kind": "{kind}", "fields": {header_fields}, "n": {len(vector) // 4}}}'.encode()
    return MAGIC + struct.pack("<I", len(header)) + header + vector


class Corrupt(LocalDevices):
    """The in-process channel, but one client's answer of one kind is rewritten by ``edit``."""

    def __init__(self, victim: str, kind: str, edit: Edit) -> None:
        super().__init__({cid: SecAggClient() for cid in IDS})
        self.victim, self.kind, self.edit, self.edits = victim, kind, edit, 0

    def call(self, client_id: str, message: bytes) -> bytes | None:
        answer = super().call(client_id, message)
        if answer is not None and client_id == self.victim and kind_of(answer) == self.kind:
            fields, vector = unpack(answer, self.kind)
            self.edits += 1
            return self.edit(fields, vector)
        return answer


def run(channel: LocalDevices, masked_edit: Callable[[str, bytes], bytes] | None = None):
    rng = np.random.default_rng(0)
    inputs = {cid: rng.integers(0, 2**32, D, dtype=np.uint64).astype(np.uint32) for cid in IDS}
    server = SecAggServer(1, IDS, T, D, complete_graph(len(IDS)), channel)
    server.setup()
    masked = {}
    for cid in IDS:
        if channel.gone(cid, Stage.MASKED):
            continue
        try:
            masked[cid] = channel.devices[cid].masked_input(inputs[cid])
        except ProtocolError:
            continue  # it was dropped before it got its shares
        if masked_edit is not None:
            masked[cid] = masked_edit(cid, masked[cid])
    total = server.aggregate(masked)
    plain = np.zeros(D, np.uint32)
    for cid in server.survivors_of_input:
        plain += inputs[cid]
    return total, plain, server


DELETE = object()
NOT_HEX = "zz" * 32
P = shamir.PRIME


def put(kind: str, path: str, value: Any) -> tuple[str, Edit]:
    """An edit of ``kind`` answers: set ``fields[path]`` (``value(old)`` if callable; DELETE
    removes it) and repack the message."""

    def edit(fields: dict[str, Any], vector: np.ndarray | None) -> bytes:
        if value is DELETE:
            del fields[path]
        else:
            fields[path] = value(fields.get(path)) if callable(value) else value
        return pack(kind, fields, vector)

    return kind, edit


# case -> (answer kind, edit): the victim c0 (index 1) must be dropped, the rest sum exactly
MALFORMED = {
    "advertise: key not hex": put("advertise", "c_pk", NOT_HEX),
    "advertise: key is a list": put("advertise", "s_pk", [1, 2]),
    "advertise: key too short": put("advertise", "c_pk", "ab" * 16),
    "advertise: low-order key": put("advertise", "s_pk", "00" * 32),
    "advertise: commitment not hex": put("advertise", "b_commit", NOT_HEX),
    "advertise: another's index": put("advertise", "index", 2),
    "advertise: index is a bool": put("advertise", "index", True),  # True == 1 in Python
    "advertise: field missing": put("advertise", "c_pk", DELETE),
    "shares: sealed is a list": put("shares", "sealed", ["00"]),
    "shares: one neighbour missing": put("shares", "sealed", lambda s: dict(list(s.items())[1:])),
    "shares: a non-neighbour": put("shares", "sealed", lambda s: {**s, "99": next(iter(s.values()))}),
    "shares: index with a leading zero": put(
        "shares", "sealed", lambda s: {("0" + k if i == 0 else k): v for i, (k, v) in enumerate(s.items())}
    ),
    "shares: not hex": put("shares", "sealed", lambda s: dict.fromkeys(s, NOT_HEX)),
    "shares: wrong length": put("shares", "sealed", lambda s: {k: v + "00" for k, v in s.items()}),
    "ready: another's index": put("ready", "index", 2),
    "ready: index is text": put("ready", "index", "1"),
    "signed: not hex": put("signed", "signature", NOT_HEX),
    "signed: wrong length": put("signed", "signature", "ab" * 63),
    "signed: does not verify": put("signed", "signature", lambda sig: "00" + sig[2:]),
    "signed: another's index": put("signed", "index", 2),
    "unmasked: s is a list": put("unmasked", "s", ["00"]),
    "unmasked: b is a list": put("unmasked", "b", []),
    "unmasked: not hex": put("unmasked", "b", lambda b: dict.fromkeys(b, NOT_HEX)),
    "unmasked: share is a number": put("unmasked", "b", lambda b: dict.fromkeys(b, 7)),
    "unmasked: share out of range": put(
        "unmasked", "b", lambda b: dict.fromkeys(b, P.to_bytes(66, "big").hex())
    ),
    "unmasked: share too long": put("unmasked", "b", lambda b: {k: v + "00" for k, v in b.items()}),
    "unmasked: another client's secret": put("unmasked", "b", lambda b: {**b, "99": next(iter(b.values()))}),
    "unmasked: a secret left out": put("unmasked", "b", lambda b: dict(list(b.items())[1:])),
    "unmasked: both secrets of one peer": put("unmasked", "s", lambda s: {"2": "00" * 66}),
    "unmasked: field missing": put("unmasked", "b", DELETE),
    "unmasked: another's index": put("unmasked", "index", 3),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_answer_costs_only_its_sender(case):
    kind, edit = MALFORMED[case]
    channel = Corrupt("c0", kind, edit)
    total, plain, server = run(channel)
    assert channel.edits == 1
    assert np.array_equal(total, plain)  # exact for everyone whose input is in the sum
    assert server.dropped_reasons.get("c0")  # with its reason
    if kind in ("signed", "unmasked"):  # its input was already in; only its part in unmasking is lost
        assert server.survivors_of_input == IDS
    else:
        assert server.survivors_of_input == IDS[1:]


def test_duplicate_json_keys_are_refused_not_resolved():
    def duplicate(fields: dict[str, Any], vector: np.ndarray | None) -> bytes:
        first = next(iter(fields["b"]))
        rest = ", ".join(f'"{k}": "{v}"' for k, v in fields["b"].items())
        text = (
            f'{{"index": {fields["index"]}, "s": {json.dumps(fields["s"])}, '
            f'"b": {{"{first}": "{"00" * 66}", {rest}}}}}'
        )  # the forged value comes first: a parser keeping the last one would not notice
        return raw("unmasked", text)

    channel = Corrupt("c0", "unmasked", duplicate)
    total, plain, server = run(channel)
    assert np.array_equal(total, plain) and "duplicate" in server.dropped_reasons["c0"]


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: m[:-4],  # a short vector
        lambda m: m + b"\0\0\0\0",  # a long one
        lambda m: pack("masked", {"index": 99}, unpack(m, "masked")[1]),
        lambda m: raw("masked", '{"index": [1]}', unpack(m, "masked")[1].tobytes()),
        lambda m: b"not a message at all",
    ],
    ids=["short", "long", "stranger's index", "index is a list", "garbage"],
)
def test_a_malformed_masked_input_is_that_clients_dropout(forge):
    channel = LocalDevices({cid: SecAggClient() for cid in IDS})
    total, plain, server = run(channel, lambda cid, m: forge(m) if cid == "c2" else m)
    assert np.array_equal(total, plain)
    assert server.survivors_of_input == [c for c in IDS if c != "c2"] and "c2" in server.dropped_reasons


def _shift(secret: str) -> Edit:
    """Add one to the share of ``secret`` ("s" or "b") of the first client listed."""

    def edit(fields: dict[str, Any], vector: np.ndarray | None) -> bytes:
        key = next(iter(fields[secret]))
        fields[secret][key] = ((int(fields[secret][key], 16) + 1) % P).to_bytes(66, "big").hex()
        return pack("unmasked", fields)

    return edit


class Liars(LocalDevices):
    """Several clients answer the unmask request with a forged share of one secret."""

    def __init__(self, liars: list[str], secret: str) -> None:
        # for "s", c5 leaves before its masked input: its key is rebuilt from shares
        super().__init__({cid: SecAggClient() for cid in IDS}, {"c5": Stage.MASKED} if secret == "s" else {})
        self.liars, self.forge = liars, _shift(secret)

    def call(self, client_id: str, message: bytes) -> bytes | None:
        answer = super().call(client_id, message)
        if answer is not None and client_id in self.liars and kind_of(answer) == "unmasked":
            return self.forge(*unpack(answer, "unmasked"))
        return answer


@pytest.mark.parametrize("secret", ["b", "s"])
def test_one_forged_share_is_outvoted_and_the_sum_stays_exact(secret):
    total, plain, server = run(Liars(["c1"], secret))
    assert np.array_equal(total, plain)
    assert "c1" in server.dropped_reasons


@pytest.mark.parametrize("secret", ["b", "s"])
def test_forged_shares_that_cannot_be_outvoted_abort_the_round(secret):
    with pytest.raises(ProtocolError, match="rebuild"):
        run(Liars(["c1", "c2"], secret))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**600), 2**600) | st.floats() | st.text(max_size=140),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=8,
)
KINDS = ["advertise", "shares", "ready", "signed", "unmasked"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.data())
def test_no_answer_whatever_its_content_escapes_the_server_or_bends_the_sum(kind, data):
    def edit(fields: dict[str, Any], vector: np.ndarray | None) -> bytes:
        name = data.draw(st.sampled_from(sorted(fields)), label="field")
        inner = fields[name]
        if isinstance(inner, dict) and inner and data.draw(st.booleans(), label="nested"):
            key = data.draw(st.sampled_from(sorted(inner)) | st.text(max_size=4), label="key")
            inner[key] = data.draw(JSON, label="value")
        else:
            fields[name] = data.draw(JSON, label="value")
        return pack(kind, fields, vector)

    total, plain, _ = run(Corrupt("c3", kind, edit))  # only a drop or nothing: never a raise
    assert np.array_equal(total, plain)


SERVER_KINDS = ["setup", "roster", "deliver", "consistency", "unmask"]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_client_answers_a_hostile_server_only_with_shoal_errors(data):
    """Every server message, honest up to one field, then one field replaced by arbitrary JSON."""
    victim, chosen = "c2", data.draw(st.sampled_from(SERVER_KINDS), label="kind")
    outcome: list[BaseException] = []

    class Hostile(LocalDevices):
        def call(self, client_id: str, message: bytes) -> bytes | None:
            if client_id == victim and kind_of(message) == chosen:
                fields, vector = unpack(message, chosen)
                name = data.draw(st.sampled_from(sorted(fields)), label="field")
                fields[name] = data.draw(JSON, label="value")
                try:
                    return self.devices[client_id].handle(pack(chosen, fields, vector))
                except ShoalError:
                    return None  # refused cleanly
                except Exception as exc:  # anything else would escape a device
                    outcome.append(exc)
                    return None
            return super().call(client_id, message)

    with contextlib.suppress(ProtocolError, ThresholdError):
        run(Hostile({cid: SecAggClient() for cid in IDS}))
    assert not outcome, repr(outcome)
