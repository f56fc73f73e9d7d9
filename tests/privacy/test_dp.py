from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import shoal
from shoal.errors import ConfigError
from shoal.messages import TrainResult
from shoal.privacy import (
    CentralDP,
    LocalDP,
    PrivacyLedger,
    Sampling,
    SecureNoise,
    SeededNoise,
    calibrate_noise,
    clip,
    epsilon,
    local_epsilon,
)
from shoal.transforms.base import AGGREGATED, TransformContext

D = 50_000


def _result(cid: str, delta: np.ndarray, n: int = 10) -> TrainResult:
    return TrainResult(1, cid, n, {"delta": delta.astype(np.float32)})


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e6, 1e6, width=32)),
    st.floats(1e-4, 1e4),
)
def test_clipping_never_exceeds_the_bound(vector, bound):
    clipped, norm = clip(vector, bound)
    assert np.linalg.norm(clipped.astype(np.float32).astype(np.float64)) <= bound
    if norm <= bound:  # short vectors pass unchanged
        np.testing.assert_array_equal(clipped.astype(np.float32), vector)


@pytest.mark.parametrize("source", ["secure", "seeded"])
def test_central_noise_std_matches_its_calibration(source):
    z, c, m = 1.3, 0.7, 20
    dp = CentralDP(noise_multiplier=z, clip_norm=c, noise=source)
    ctx = TransformContext(1, 0, D, Sampling.fixed(m, 100))
    zeros = [_result(str(i), np.zeros(D)) for i in range(m)]
    (merged,) = dp.server_apply(zeros, ctx)
    noise = merged.payload["delta"].astype(np.float64) * m  # the noised sum
    # the sample std of D normals is within 4 / sqrt(2 D) (relative) with overwhelming probability
    assert abs(noise.std() / (z * c) - 1) < 4 / math.sqrt(2 * D)
    assert abs(noise.mean()) < 4 * z * c / math.sqrt(D)
    assert merged.metrics[AGGREGATED] == m


def test_secure_noise_never_repeats_and_seeded_noise_does():
    assert not np.array_equal(SecureNoise().normal(8, 1.0, 1), SecureNoise().normal(8, 1.0, 1))
    assert np.array_equal(SeededNoise(3).normal(8, 1.0, 1, "a"), SeededNoise(3).normal(8, 1.0, 1, "a"))
    assert not np.array_equal(SeededNoise(3).normal(8, 1.0, 1, "a"), SeededNoise(3).normal(8, 1.0, 2, "a"))


def test_central_dp_clips_each_client_and_averages_over_the_expected_cohort():
    dp = CentralDP(noise_multiplier=1e-9, clip_norm=1.0, noise="seeded")
    big, small = np.full(4, 10.0), np.array([0.1, 0.0, 0.0, 0.0])
    bad = np.array([np.nan, 0, 0, 0])
    out = dp.server_apply(
        [_result("a", big), _result("b", small), _result("c", bad)],
        TransformContext(1, 0, 4, Sampling.poisson(0.5, 8)),  # expected cohort 4
    )
    merged, rejected = out
    expected = (big / np.linalg.norm(big) + small) / 4
    np.testing.assert_allclose(merged.payload["delta"], expected, atol=1e-5)
    assert rejected.client_id == "c" and rejected.kind.value == "rejected"


def test_ledger_epsilon_matches_dp_accounting_computed_independently():
    q, z, rounds, delta = 0.05, 1.1, 30, 1e-5
    for name, acc in (
        ("rdp", rdp_privacy_accountant.RdpAccountant()),
        ("pld", pld_privacy_accountant.PLDAccountant()),
    ):
        ledger = PrivacyLedger(z, delta, name)
        for _ in range(rounds):
            ledger.record(Sampling.poisson(q, 200))
        acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds)
        assert ledger.epsilon() == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
    # fixed-size sampling: replace-one adjacency, so the sum's sensitivity is 2C
    fixed = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    fixed.compose(dp_event.SampledWithoutReplacementDpEvent(200, 10, dp_event.GaussianDpEvent(z / 2)), rounds)
    assert epsilon(Sampling.fixed(10, 200), z, rounds, delta) == pytest.approx(fixed.get_epsilon(delta))


def test_a_change_of_sampling_kind_mid_run_is_refused():
    ledger = PrivacyLedger(1.0, 1e-5, "rdp")
    ledger.record(Sampling.poisson(0.1, 100))
    with pytest.raises(ConfigError, match="sampling changed"):
        ledger.record(Sampling.fixed(10, 100))
    with pytest.raises(ConfigError, match="PLD accountant supports only Poisson"):
        PrivacyLedger(1.0, 1e-5, "pld").record(Sampling.fixed(10, 100))


def test_calibrated_noise_meets_the_target():
    sampling = Sampling.poisson(0.02, 500)
    z = calibrate_noise(sampling, 200, 3.0, 1e-5)
    assert epsilon(sampling, z, 200, 1e-5) <= 3.0
    assert epsilon(sampling, z * 0.98, 200, 1e-5) > 3.0  # and is close to the smallest such z


def test_adaptive_clip_noise_split_follows_andrew_et_al():
    dp = CentralDP(noise_multiplier=1.0, adaptive=True, clip_count_stddev=2.0)
    assert dp.update_noise_multiplier(40) == pytest.approx((1.0 - 1 / 16) ** -0.5)
    with pytest.raises(ConfigError, match="2 \\* clip_count_stddev > noise_multiplier"):
        CentralDP(noise_multiplier=5.0, adaptive=True, clip_count_stddev=2.0).update_noise_multiplier(40)


def test_adaptive_clip_norm_tracks_the_target_quantile():
    rng = np.random.default_rng(0)
    dp = CentralDP(noise_multiplier=0.5, clip_norm=0.05, adaptive=True, noise="seeded", target_quantile=0.5)
    m = 50
    for r in range(1, 121):
        norms = rng.lognormal(np.log(2.0), 0.3, m)  # median update norm 2.0
        results = [_result(str(i), np.array([n, 0.0])) for i, n in enumerate(norms)]
        dp.server_apply(results, TransformContext(r, 0, 2, Sampling.fixed(m, 500)))
    assert 1.6 < dp.clip_norm < 2.5


def _digits_setup():
    data = shoal.data.iid(shoal.data.digits(), 40, seed=0)
    model = lambda: shoal.models.mlp(data.input_shape, 10, (16,))  # noqa: E731
    return data, model


def test_target_epsilon_stops_the_run_before_the_budget_is_exceeded():
    data, model = _digits_setup()
    sampling = Sampling.poisson(0.25, 40)
    budget = epsilon(sampling, 1.0, 3, 1e-5) * 1.001  # enough for three rounds, not four
    dp = CentralDP(noise_multiplier=1.0, clip_norm=0.5, target_epsilon=budget, noise="seeded")
    strategy = shoal.FedAvg(fraction=0.25, sampling="poisson")
    history = shoal.simulate(model, data, strategy, shoal.TorchTrainer(lr=0.1), rounds=10, transforms=[dp])
    assert len(history.records) == 3 and "privacy budget" in history.stopped
    assert history.records[-1]["dp_epsilon"] <= budget
    assert history.records[0]["clients_completed"] >= 1


def test_central_dp_run_resumes_exactly(tmp_path):
    data, model = _digits_setup()

    def run(rounds, resume=False):
        dp = CentralDP(noise_multiplier=0.8, clip_norm=0.5, adaptive=True, noise="seeded")
        strategy = shoal.FedAvg(fraction=0.3, sampling="poisson")
        return shoal.simulate(
            model, data, strategy, rounds=rounds, transforms=[dp], out_dir=tmp_path, resume=resume
        )

    straight = shoal.simulate(
        model,
        data,
        shoal.FedAvg(fraction=0.3, sampling="poisson"),
        rounds=4,
        transforms=[CentralDP(noise_multiplier=0.8, clip_norm=0.5, adaptive=True, noise="seeded")],
    )
    run(2)
    resumed = run(4, resume=True)
    assert resumed.model_hash == straight.model_hash
    assert resumed.records[-1]["dp_epsilon"] == pytest.approx(straight.records[-1]["dp_epsilon"])


def test_local_dp_noises_on_the_device_and_reports_the_worst_client():
    dp = LocalDP(clip_norm=1.0, noise_multiplier=2.0, noise="seeded")
    ctx = TransformContext(1, 0, D)
    out = dp.client_apply(_result("a", np.full(D, 1.0)), ctx)
    sent = out.payload["delta"].astype(np.float64)
    assert abs(sent.std() / 2.0 - 1) < 0.02  # noise std z * C dominates the clipped signal
    assert sent.mean() == pytest.approx(1 / math.sqrt(D), abs=4 * 2.0 / math.sqrt(D))
    for _ in range(3):
        dp.begin_round(ctx, ["a"])
    dp.begin_round(ctx, ["b"])
    assert dp.round_metrics()["ldp_epsilon_worst_client"] == pytest.approx(local_epsilon(2.0, 3, 1e-5))


def test_a_bad_adaptive_setting_fails_before_any_client_trains():
    data, model = _digits_setup()
    dp = CentralDP(noise_multiplier=30.0, adaptive=True)  # clip count noise 10/20 is far too small
    sim = shoal.Simulation(model, data, shoal.FedAvg(fraction=0.25, sampling="poisson"), transforms=[dp])
    with pytest.raises(ConfigError, match="2 \\* clip_count_stddev > noise_multiplier"):
        sim.run(3)
    assert sim.records == []


def test_a_resumed_ledger_refuses_another_mechanism():
    ledger = PrivacyLedger(1.0, 1e-5, "rdp")
    ledger.record(Sampling.poisson(0.1, 100))
    state = ledger.state_dict()
    same = PrivacyLedger(1.0, 1e-5, "rdp")
    same.load_state_dict(state)
    assert same.epsilon() == pytest.approx(ledger.epsilon())
    with pytest.raises(shoal.CheckpointError, match=r"noise_multiplier = 1\.0, this run 0\.5"):
        PrivacyLedger(0.5, 1e-5, "rdp").load_state_dict(state)
    with pytest.raises(shoal.CheckpointError, match="accountant"):
        PrivacyLedger(1.0, 1e-5, "pld").load_state_dict(state)
    with pytest.raises(shoal.CheckpointError, match="does not say"):
        PrivacyLedger(1.0, 1e-5, "rdp").load_state_dict({"rounds": state["rounds"]})


def test_a_central_dp_run_resumed_with_another_noise_multiplier_is_refused(tmp_path):
    data, model = _digits_setup()
    strategy = shoal.FedAvg(fraction=0.3, sampling="poisson")
    dp = CentralDP(noise_multiplier=0.8, clip_norm=0.5, noise="seeded")
    shoal.simulate(model, data, strategy, rounds=1, transforms=[dp], out_dir=tmp_path)
    other = CentralDP(noise_multiplier=1.6, clip_norm=0.5, noise="seeded")
    with pytest.raises(shoal.CheckpointError, match="noise_multiplier"):
        shoal.simulate(model, data, strategy, rounds=2, transforms=[other], out_dir=tmp_path, resume=True)


def test_dp_runs_pick_clients_from_a_secret_source_unless_seeded():
    data, model = _digits_setup()

    def cohorts(noise: str) -> list[list[str]]:
        picked: list[list[str]] = []

        class Spy(shoal.InProcessBackend):
            def train(self, tasks):
                picked.append(sorted(t.client_id for t in tasks))
                return super().train(tasks)

        dp = CentralDP(noise_multiplier=1.0, clip_norm=0.5, noise=noise)
        strategy = shoal.FedAvg(fraction=0.25, sampling="poisson")
        trainer = shoal.TorchTrainer(lr=0.1)
        backend = Spy(trainer, model, data, [dp], run_seed=4)
        shoal.simulate(model, data, strategy, trainer, rounds=3, seed=4, transforms=[dp], backend=backend)
        return picked

    assert cohorts("seeded") == cohorts("seeded")  # reproducible experiments, and unsafe
    assert cohorts("secure") != cohorts("secure")  # nobody can tell from the seed who was picked
