"""Stochastic quantization: unbiased, packed exactly, checked on arrival, and it trains."""

from __future__ import annotations

import numpy as np
import pytest

from shoal import config, experiment
from shoal.errors import ConfigError
from shoal.messages import FailureKind, TrainResult, encode, encoded_size
from shoal.transforms.base import TransformContext
from shoal.transforms.compress import pack_bits, unpack_bits
from shoal.transforms.quantize import BITS, StochasticQuantization


@pytest.mark.parametrize("bits", BITS)
def test_packed_levels_round_trip(bits):
    levels = np.random.default_rng(bits).integers(0, 1 << bits, 1001).astype(np.uint8)
    packed = pack_bits(levels, bits)
    assert packed.nbytes == -(-1001 * bits // 8) and np.array_equal(unpack_bits(packed, bits, 1001), levels)


@pytest.mark.parametrize("bits", BITS)
def test_stochastic_quantization_is_unbiased(bits):
    x = np.random.default_rng(0).normal(size=3072).astype(np.float32)
    q = StochasticQuantization(bits=bits, block=512)
    result, draws = TrainResult(1, "a", 10, {"delta": x}), 300
    total = np.zeros(x.shape)
    for k in range(draws):
        ctx = TransformContext(k, 0, x.size)
        total += q.server_apply([q.client_apply(result, ctx)], ctx)[0].payload["delta"]
    # each coordinate is one of its two nearest levels: variance at most step^2 / 4
    lo, hi = x.reshape(-1, 512).min(1), x.reshape(-1, 512).max(1)
    step = np.repeat((hi - lo) / ((1 << bits) - 1), 512)
    bound = 6 * step / 2 / np.sqrt(draws) + 1e-6
    assert (np.abs(total / draws - x) <= bound).all()


def test_deterministic_rounding_lands_on_the_nearest_level_and_bytes_are_exact():
    x = np.linspace(-1, 1, 100_000, dtype=np.float32)
    q = StochasticQuantization(bits=4, block=100_000, stochastic=False)
    ctx = TransformContext(1, 0, x.size)
    sent = q.client_apply(TrainResult(1, "a", 10, {"delta": x}), ctx)
    back = q.server_apply([sent], ctx)[0].payload["delta"]
    assert np.abs(back - x).max() <= (2 / 15) / 2 + 1e-6  # half a step
    full = encoded_size(TrainResult(1, "a", 10, {"delta": x}))
    assert encoded_size(sent) == len(encode(sent)) and full / encoded_size(sent) > 7.9  # 32 / 4 bits


def test_a_malformed_quantized_upload_is_refused():
    q = StochasticQuantization(bits=2, block=8)
    ctx = TransformContext(1, 0, 16)
    good = q.client_apply(TrainResult(1, "a", 10, {"delta": np.ones(16, np.float32)}), ctx)
    short = TrainResult(1, "b", 10, {**good.payload, "delta_q": good.payload["delta_q"][:1]})
    (out,) = q.server_apply([short], ctx)
    assert out.kind is FailureKind.REJECTED and "2-bit quantized update" in out.reason  # type: ignore[union-attr]


def test_quantized_runs_train_and_secure_aggregation_refuses_them(tmp_path):
    raw = {
        "rounds": 3, "seed": 0, "backend": "inprocess", "compression": {"uplink": "quantize", "bits": 4},
        "data": {"dataset": "digits", "num_clients": 10}, "model": {"name": "mlp", "hidden": [16]},
        "strategy": {"clients_per_round": 5}, "trainer": {"lr": 0.3, "local_epochs": 2, "batch_size": 16},
    }  # fmt: skip
    history = experiment.run(config.from_dict(raw), tmp_path / "q")
    plain = experiment.run(config.from_dict({**raw, "compression": {}}), tmp_path / "plain")
    # 1,210 weights: the message header is a fifth of a 4-bit upload here
    assert history.final_accuracy > 0.6 and history.bytes_up < plain.bytes_up / 4
    with pytest.raises(ConfigError, match=r"set compression\.uplink = 'none'"):
        config.from_dict({**raw, "secagg": {"mode": "secagg"}})
