"""The uplink codecs: exact bytes, exact error feedback, seeded masks, hostile payloads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import shoal
from shoal import config, experiment
from shoal.errors import ConfigError
from shoal.messages import FailureKind, TrainResult, encode, encoded_size
from shoal.runtime.checkpoint import load_checkpoint
from shoal.transforms import (
    HalfPrecision,
    PowerSGD,
    RandomMask,
    SignCompression,
    StochasticQuantization,
    TopK,
    TransformContext,
)
from shoal.transforms.compress import RESIDUAL_PREFIX
from shoal.transforms.low_rank import WARM_START
from shoal.transforms.sparse import INDICES, VALUES

N = 5000
SHAPES = ((40, 100), (40,), (10, 40), (10,), (50, 11))  # 5,000 values, two of them biases
assert sum(int(np.prod(s)) for s in SHAPES) == N


def ctx(state=None, round=1, n=N):
    return TransformContext(round=round, run_seed=7, num_params=n, state=state)


def result(delta, cid="a", round=1):
    return TrainResult(round, cid, 10, {"delta": np.asarray(delta, np.float32)})


def update(seed=0):
    return np.random.default_rng(seed).standard_normal(N).astype(np.float32)


CODECS = {
    "half": lambda: HalfPrecision(),
    "quantize-4": lambda: StochasticQuantization(4),
    "top-k": lambda: TopK(0.01),
    "random-mask": lambda: RandomMask(0.1),
    "sign": lambda: SignCompression(),
    "powersgd": lambda: PowerSGD(2, SHAPES),
    "top-k, 1-bit values": lambda: TopK(0.01, values=StochasticQuantization(1), error_feedback=False),
    "random-mask, 1-bit values": lambda: RandomMask(0.1, values=StochasticQuantization(1)),
    "top-k, sign values": lambda: TopK(0.01, values=SignCompression()),
}
# float32 bytes over payload bytes, computed from each format (headers excluded)
PAYLOAD_BYTES = {
    "half": 2 * N,
    "quantize-4": N // 2 + 8 * 5,
    "top-k": 8 * 50,
    "random-mask": 4 * 500,
    "sign": -(-N // 8) + 4 * 5,
    "powersgd": 4 * (2 * (40 + 100) + 2 * (10 + 40) + 2 * (50 + 11) + 40 + 10),
    "top-k, 1-bit values": 4 * 50 + 7 + 8,  # indices, 50 bits, one block's range
    "random-mask, 1-bit values": 63 + 8,
    "top-k, sign values": 4 * 50 + 7 + 4,  # indices, 50 signs, one block's scale
}


@pytest.mark.parametrize("name", CODECS)
def test_encoded_size_is_the_bytes_on_the_wire_and_the_payload_is_what_the_format_says(name):
    sent = CODECS[name]().client_apply(result(update()), ctx(state={}))
    assert encoded_size(sent) == len(encode(sent))
    assert sum(v.nbytes for v in sent.payload.values()) == PAYLOAD_BYTES[name]


@pytest.mark.parametrize("name", CODECS)
def test_what_the_server_decodes_is_what_the_device_computed(name):
    codec = CODECS[name]()
    state: dict[str, np.ndarray] = {}
    delta = update()
    sent = codec.client_apply(result(delta), ctx(state=state))
    (decoded,) = codec.server_apply([sent], ctx())
    assert isinstance(decoded, TrainResult) and decoded.payload["delta"].dtype == np.float32
    if codec.error_feedback:  # the residual is what the server did not get
        residual = state[RESIDUAL_PREFIX + codec.name]
        np.testing.assert_allclose(decoded.payload["delta"] + residual, delta, atol=1e-5)


def test_top_k_error_feedback_is_exact():
    codec, state = TopK(0.01), {}
    old = update(1) * 0.1
    state[RESIDUAL_PREFIX + "top-k"] = old.copy()
    delta = update(2)
    sent = codec.client_apply(result(delta), ctx(state=state))
    (decoded,) = codec.server_apply([sent], ctx())
    new = state[RESIDUAL_PREFIX + "top-k"]
    # residual plus what was sent equals the input plus the old residual, bit for bit
    assert np.array_equal(new + decoded.payload["delta"], delta + old)
    kept = sent.payload[INDICES]
    assert np.array_equal(np.sort(np.argsort(-np.abs(delta + old))[:50]), kept)  # the 50 largest
    assert (new[kept] == 0).all()


def test_what_top_k_leaves_out_is_sent_in_a_later_round():
    codec, state = TopK(0.01), {}
    small = np.full(N, 0.001, np.float32)
    small[:50] = 1.0  # round 1 sends these; the small ones wait in the residual
    total = np.zeros(N, np.float32)
    for r in range(1, 150):
        sent = codec.client_apply(
            result(small if r == 1 else np.zeros(N, np.float32), round=r), ctx(state, r)
        )
        total += codec.server_apply([sent], ctx(round=r))[0].payload["delta"]
    np.testing.assert_allclose(total, small, rtol=1e-5)  # everything arrived, late but whole


def test_random_mask_is_drawn_from_the_seed_and_unbiased():
    codec, delta = RandomMask(0.1), update()
    sent = codec.client_apply(result(delta), ctx())
    assert set(sent.payload) == {VALUES}  # only values travel: the server draws the mask itself
    (again,) = codec.server_apply([sent], ctx())
    kept = np.flatnonzero(again.payload["delta"])
    np.testing.assert_allclose(again.payload["delta"][kept], delta[kept] * 10, rtol=1e-6)
    other = codec.client_apply(result(delta, cid="b"), ctx())
    assert not np.array_equal(other.payload[VALUES], sent.payload[VALUES])  # each client its own mask
    mean = np.zeros(N)
    draws = 2000
    for i in range(draws):
        mean += codec.server_apply([codec.client_apply(result(delta, cid=str(i)), ctx())], ctx())[0].payload[
            "delta"
        ]
    mean /= draws
    # per coordinate: variance delta^2 (n/k - 1) / draws; 5 standard errors
    assert np.all(np.abs(mean - delta) <= 5 * np.abs(delta) * np.sqrt(9 / draws) + 1e-6)


def test_sign_sends_one_bit_and_keeps_each_blocks_l1_norm():
    codec = SignCompression(block=1000, error_feedback=False)
    delta = update()
    (out,) = codec.server_apply([codec.client_apply(result(delta), ctx())], ctx())
    decoded = out.payload["delta"]
    assert np.array_equal(np.sign(decoded), np.where(delta >= 0, 1.0, -1.0))
    np.testing.assert_allclose(
        np.abs(decoded).reshape(5, -1).sum(1), np.abs(delta).reshape(5, -1).sum(1), rtol=1e-5
    )


def test_powersgd_recovers_a_low_rank_update_and_warm_starts():
    rng = np.random.default_rng(3)
    layers = [
        (rng.standard_normal((s[0], 2)) @ rng.standard_normal((2, int(np.prod(s[1:]))))).reshape(-1)
        if len(s) > 1
        else rng.standard_normal(s)
        for s in SHAPES
    ]
    delta = np.concatenate(layers).astype(np.float32)  # every matrix of rank 2
    codec, state = PowerSGD(2, SHAPES), {}
    (out,) = codec.server_apply([codec.client_apply(result(delta), ctx(state))], ctx())
    np.testing.assert_allclose(out.payload["delta"], delta, atol=1e-4)
    assert state[WARM_START].shape == (2 * (100 + 40 + 11),)  # next round starts from these Qs
    with pytest.raises(ValueError, match="built for a model of 5000"):
        codec.client_apply(result(delta[:10]), ctx({}, n=10))


@pytest.mark.parametrize(
    "codec",
    [
        lambda: StochasticQuantization(1, error_feedback=True),
        lambda: RandomMask(0.1, error_feedback=True),
        lambda: TopK(0.01, values=StochasticQuantization(1)),  # error feedback is on for top-k
    ],
)
def test_error_feedback_is_refused_for_a_codec_that_does_not_contract(codec):
    with pytest.raises(ConfigError, match="not a contraction"):
        codec()
    with pytest.raises(ConfigError, match="set error_feedback = false"):
        config.from_dict({"compression": {"uplink": "top-k", "values": "quantize"}})


def test_what_a_contracting_codec_loses_is_never_more_than_its_input():
    for codec in (
        TopK(0.01),
        SignCompression(),
        PowerSGD(2, SHAPES),
        HalfPrecision(),
        TopK(0.01, values=SignCompression()),
    ):
        for seed in range(5):
            x = update(seed) * np.random.default_rng(seed).exponential(size=N).astype(np.float32)
            sent = codec.client_apply(result(x), ctx(state={}))
            lost = x - codec.server_apply([sent], ctx())[0].payload["delta"]
            assert codec.contracts() and np.linalg.norm(lost) <= np.linalg.norm(x) * (1 + 1e-6)


def test_error_feedback_needs_the_client_state():
    with pytest.raises(ValueError, match="client's state"):
        TopK().client_apply(result(update()), ctx(state=None))


@pytest.mark.parametrize(
    ("codec", "key", "forge", "why"),
    [
        (TopK(0.01), INDICES, lambda v: np.concatenate([v[:1], v[:-1]]), "increase"),  # a repeated index
        (TopK(0.01), INDICES, lambda v: np.concatenate([v[:-1], np.uint32([N])]), "below the model's size"),
        (TopK(0.01), INDICES, lambda v: v[:-1], "expected uint32"),
        (
            TopK(0.01),
            VALUES,
            lambda v: np.where(np.arange(v.size) == 0, np.nan, v).astype(np.float32),
            "finite",
        ),
        (TopK(0.01), VALUES, lambda v: v.astype(np.float64), "expected float32"),
        (RandomMask(0.1), VALUES, lambda v: np.concatenate([v, v]), "expected float32"),
        (SignCompression(), "delta_scale", lambda v: -v, "negative"),
        (PowerSGD(2, SHAPES), "delta_pq", lambda v: v[:-1], "expected float32"),
        (StochasticQuantization(4), "delta_lo", lambda v: v + 1e9, "maximum is below"),
        (RandomMask(0.1, values=StochasticQuantization(1)), "val_delta_q", lambda v: v[:1], "expected uint8"),
    ],
)
def test_a_forged_upload_costs_only_its_sender(codec, key, forge, why):
    good = codec.client_apply(result(update(), cid="good"), ctx(state={}))
    bad = codec.client_apply(result(update(), cid="bad"), ctx(state={}))
    bad = TrainResult(1, "bad", 10, {**bad.payload, key: forge(bad.payload[key])})
    missing = TrainResult(1, "empty", 10, {})
    out = codec.server_apply([good, bad, missing], ctx())
    assert isinstance(out[0], TrainResult)
    assert out[1].kind is FailureKind.REJECTED and why in out[1].reason  # type: ignore[union-attr]
    assert out[2].kind is FailureKind.REJECTED and "keys missing" in out[2].reason  # type: ignore[union-attr]


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"keep_fraction must be in \(0, 0\.5\]"):
        config.from_dict({"compression": {"uplink": "top-k", "keep_fraction": 0.6}})
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        config.from_dict({"compression": {"uplink": "powersgd", "rank": 0}})
    with pytest.raises(ConfigError, match="needs a compressor"):
        config.from_dict({"compression": {"error_feedback": True}})
    with pytest.raises(ConfigError, match="none, half or quantize"):
        config.from_dict({"compression": {"downlink": "top-k"}})
    with pytest.raises(ConfigError, match="values encodes the values top-k or random-mask keep"):
        config.from_dict({"compression": {"uplink": "sign", "values": "quantize"}})
    with pytest.raises(ConfigError, match=r"set in \[compression\]"):
        config.from_dict({"transforms": ["quantize-4"]})


RUN = {
    "rounds": 4, "seed": 0, "backend": "inprocess",
    "data": {"dataset": "digits", "num_clients": 10}, "model": {"name": "mlp", "hidden": [32]},
    "strategy": {"clients_per_round": 5}, "trainer": {"lr": 0.3, "local_epochs": 2, "batch_size": 16},
}  # fmt: skip


@pytest.mark.parametrize(
    ("compression", "smaller"),
    [
        ({"uplink": "top-k", "keep_fraction": 0.05}, 6),  # headers weigh on a 2,410-weight model
        ({"uplink": "sign"}, 10),
        ({"uplink": "powersgd", "rank": 2}, 4),
        ({"uplink": "random-mask", "keep_fraction": 0.25}, 3),
    ],
)
def test_compressed_runs_train_and_send_less(compression, smaller, tmp_path):
    history = experiment.run(config.from_dict({**RUN, "compression": compression}), tmp_path / "c")
    plain = experiment.run(config.from_dict(RUN), tmp_path / "plain")
    assert history.final_accuracy > 0.5 and history.bytes_up * smaller < plain.bytes_up


def test_error_feedback_resumes_exactly(fed_digits, small_mlp, tmp_path):
    trainer = shoal.TorchTrainer(lr=0.3, local_epochs=1, batch_size=16)
    run = dict(rounds=4, transforms=[TopK(0.02)], seed=3)
    straight = shoal.simulate(small_mlp, fed_digits, shoal.FedAvg(clients_per_round=10), trainer, **run)
    half = {**run, "rounds": 2, "transforms": [TopK(0.02)]}
    shoal.simulate(
        small_mlp, fed_digits, shoal.FedAvg(clients_per_round=10), trainer, out_dir=tmp_path, **half
    )
    resumed = shoal.simulate(
        small_mlp, fed_digits, shoal.FedAvg(clients_per_round=10), trainer, out_dir=tmp_path, resume=True,
        **{**run, "transforms": [TopK(0.02)]},
    )  # fmt: skip
    assert resumed.model_hash == straight.model_hash
    saved = load_checkpoint(tmp_path / "checkpoint.safetensors").state["backend"]["clients"]
    assert len(saved["ids"]) >= 10  # every client that took part kept its residual
    assert all(RESIDUAL_PREFIX + "top-k" in s for s in saved["states"])


@pytest.mark.parametrize(("downlink", "smaller"), [("half", 1.9), ("quantize", 3)])
def test_a_compressed_downlink_sends_less_and_still_trains(downlink, smaller, tmp_path):
    plain = experiment.run(config.from_dict(RUN), tmp_path / "plain")
    down = experiment.run(config.from_dict({**RUN, "compression": {"downlink": downlink}}), tmp_path / "d")
    assert down.bytes_down * smaller < plain.bytes_down
    assert down.final_accuracy > plain.final_accuracy - 0.05
    assert down.model_hash != plain.model_hash  # the devices trained from the rounded model


def test_a_device_decodes_the_model_it_receives_and_refuses_a_forged_one():
    from shoal.messages import TrainTask
    from shoal.transforms.downlink import compress_tasks, model_size, received

    params = update()
    tasks = [TrainTask(1, c, params, 0, {"lr": 0.1}) for c in "ab"]
    wire = compress_tasks(tasks, "quantize")
    assert wire[0].params.shape == (0,) and model_size(wire[0]) == N
    assert wire[0].arrays["downlink:delta_q"] is wire[1].arrays["downlink:delta_q"]  # encoded once
    assert encoded_size(wire[0]) < encoded_size(tasks[0]) / 3.5
    got = received(wire[0])
    assert got.config == {"lr": 0.1} and not got.arrays
    step = (params.max() - params.min()) / 255
    assert np.abs(got.params - params).max() <= step  # 8 bits, nearest level, per block of 1,024
    assert received(tasks[0]) is tasks[0]  # a float32 model passes through
    forged = dataclasses.replace(wire[0], arrays={"downlink:delta_q": np.zeros(3, np.uint8)})
    with pytest.raises(ValueError, match="needs arrays"):
        received(forged)
