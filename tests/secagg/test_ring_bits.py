"""A narrower SecAgg ring: fewer bytes on the wire, sums still exact, rounding unbiased."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shoal
from shoal.errors import ConfigError, WireFormatError
from shoal.secagg import LocalDevices, ProtocolError, SecAggClient, SecAggServer, SecureAggregation, Stage
from shoal.secagg import complete_graph as graph_of
from shoal.secagg.crypto import decode, encode, fixed_point_scale, ring_mask
from shoal.secagg.encoding import FixedPoint
from shoal.secagg.transform import MASKED
from shoal.secagg.wire import Masked, Setup, pack, read_masked, read_setup, unpack
from shoal.strategy import mean
from shoal.transforms.base import TransformContext

TRAINER = shoal.TorchTrainer(lr=0.3, local_epochs=2, batch_size=16)


def _fedavg():
    return shoal.FedAvg(clients_per_round=8, aggregator=mean)


def run_round(n, t, vanish, bits, dimension=64, seed=0):
    """One protocol round in a ``bits``-bit ring; client ``i`` vanishes from ``vanish[i]``."""
    ids = [f"c{i}" for i in range(n)]
    channel = LocalDevices(
        {cid: SecAggClient() for cid in ids},
        {cid: s for cid, s in zip(ids, vanish, strict=True) if s is not None},
    )
    rng = np.random.default_rng(seed)
    inputs = {cid: rng.integers(0, 2**bits, dimension, dtype=np.uint64).astype(np.uint32) for cid in ids}
    server = SecAggServer(1, ids, t, dimension, graph_of(n), channel, ring_bits=bits)
    server.setup()
    masked = {}
    for cid in ids:
        if not channel.gone(cid, Stage.MASKED):
            with contextlib.suppress(ProtocolError):
                masked[cid] = channel.devices[cid].masked_input(inputs[cid])
    total = server.aggregate(masked)
    plain = np.zeros(dimension, np.uint64)
    for cid in server.survivors_of_input:
        plain += inputs[cid]
    return total, (plain % 2**bits).astype(np.uint32), server, masked


@pytest.mark.parametrize("bits", [32, 16, 12])
def test_a_masked_input_takes_dimension_times_bits_over_8_bytes_plus_its_header(bits):
    d = 10_001
    _, _, _, masked = run_round(4, 3, [None] * 4, bits, dimension=d)
    body = -(-d * bits // 8)  # 40,004 bytes at 32 bits, 20,002 at 16, 15,002 at 12
    for message in masked.values():
        assert 40 < len(message) - body < 100  # magic, length and a JSON header of a few dozen bytes
        assert read_masked(message, d, bits).vector.max() < 2**bits


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_the_ring_sum_is_exact_under_every_dropout_pattern(data):
    bits = data.draw(st.sampled_from([8, 12, 16, 31]), label="bits")
    n = data.draw(st.integers(3, 7), label="clients")
    t = 2 * (n - 1) // 3 + 1
    vanish = data.draw(st.lists(st.one_of(st.none(), st.sampled_from(list(Stage))), min_size=n, max_size=n))
    if sum(v is None for v in vanish) >= t + 1:
        total, plain, _, _ = run_round(n, t, vanish, bits)
        assert np.array_equal(total, plain)  # exact, mod 2^bits
        assert total.max() <= ring_mask(bits)


def test_stochastic_encoding_is_unbiased_and_nearest_is_not():
    bound, scale = 1.0, 2.0**4  # a coarse grid: step 1/16
    x = np.array([0.01, -0.02, 0.3001, 1 / 32, -0.999])
    rng = np.random.default_rng(0)
    draws = 20_000
    total = np.zeros(x.size)
    for _ in range(draws):
        total += decode(encode(x, bound, scale, 12, rng), scale, 12)
    # each draw is x plus an error in (-step, step) of variance <= step^2 / 4: the mean of
    # 20,000 lies within 5 standard deviations, 5 * (1/32) / sqrt(20,000) = 1.1e-3
    np.testing.assert_allclose(total / draws, x, atol=1.2e-3)
    nearest = decode(encode(x, bound, scale, 12), scale, 12)
    assert nearest[0] == 0.0 and nearest[1] == 0.0  # nearest rounding loses small updates entirely


def test_thirty_two_bits_reproduce_the_old_fixed_point_bit_for_bit(fed_digits, small_mlp):
    class Legacy(SecureAggregation):
        """The path before encoders: the device puts floats in fixed point itself."""

        def client_apply(self, result, ctx):
            message = self.channel.devices[result.client_id].masked_input(result.payload["delta"])
            return replace(result, payload={MASKED: np.frombuffer(message, dtype=np.uint8)})

    runs = [
        shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=2, transforms=[t(bound=4.0)])
        for t in (Legacy, SecureAggregation)
    ]
    assert runs[0].model_hash == runs[1].model_hash
    setup = Setup(1, 1, 2, 10, (2, 3), 4.0, 2.0**27)
    assert b"ring_bits" not in setup.pack() and read_setup(setup.pack()) == setup  # the old message


@pytest.mark.parametrize("bits", [16, 12])
def test_a_narrow_ring_trains_like_the_float_run_and_sends_fewer_bytes(fed_digits, small_mlp, bits):
    plain = shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=3)
    wide, narrow = (
        shoal.simulate(
            small_mlp,
            fed_digits,
            _fedavg(),
            TRAINER,
            rounds=3,
            transforms=[SecureAggregation(bound=4.0, ring_bits=b)],
        )
        for b in (32, bits)
    )
    assert narrow.final_accuracy == pytest.approx(plain.final_accuracy, abs=0.03)
    assert narrow.bytes_up < wide.bytes_up * (bits + 3) / 32
    assert narrow.records[-1]["clients_completed"] == 8


def test_too_few_levels_per_client_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="ring_bits to 10"):
        FixedPoint(bound=1.0).scale(200, 8, 100)
    assert FixedPoint(bound=1.0).scale(100, 8, 100) == 1.0  # exactly 3 levels: allowed
    with pytest.raises(ConfigError, match="ring_bits"):
        SecureAggregation(ring_bits=40)
    ctx = TransformContext(1, 0, 10)
    secagg = SecureAggregation(ring_bits=8)
    with pytest.raises(ConfigError, match="fewer clients"):
        secagg.begin_round(ctx, [str(i) for i in range(300)])


def test_the_fixed_point_scale_leaves_room_for_rounding_up():
    n, bound, bits = 5, 1.3, 12
    scale = fixed_point_scale(n, bound, bits)
    assert n * np.ceil(bound * scale) <= 2 ** (bits - 1) - 1


def _malformed(kind):
    def edit(message, bits):
        fields, vector = unpack(message, "masked", bits=bits)
        if kind == "oversized":  # every entry at 32 bits in a 16-bit round
            return pack("masked", fields, vector)
        if kind == "spare-bits":
            return message[:-1] + bytes([message[-1] | 0x80])
        return message[:-3]  # truncated

    return edit


@pytest.mark.parametrize("kind", ["oversized", "spare-bits", "truncated"])
def test_a_malformed_packed_input_costs_only_its_sender(fed_digits, small_mlp, kind):
    edit = _malformed(kind)

    class OneLiar(SecureAggregation):
        def client_apply(self, result, ctx):
            out = super().client_apply(result, ctx)
            if result.client_id == min(self.channel.devices):
                bad = edit(out.payload[MASKED].tobytes(), self.ring_bits)
                return replace(out, payload={MASKED: np.frombuffer(bad, dtype=np.uint8)})
            return out

    secagg = OneLiar(bound=4.0, ring_bits=15)  # 1,210 x 15 bits: the last byte has spare bits
    history = shoal.simulate(small_mlp, fed_digits, _fedavg(), TRAINER, rounds=1, transforms=[secagg])
    record = history.records[-1]
    assert not record["aborted"] and record["clients_completed"] == 7


def test_the_reader_refuses_a_vector_at_another_width():
    message = Masked(1, np.arange(10, dtype=np.uint32), 12).pack()
    assert np.array_equal(read_masked(message, 10, 12).vector, np.arange(10))
    for bits in (16, 32):
        with pytest.raises(WireFormatError):
            read_masked(message, 10, bits)
    with pytest.raises(WireFormatError):
        read_masked(Masked(1, np.arange(10, dtype=np.uint32)).pack(), 10, 12)
