from __future__ import annotations

import numpy as np

from shoal import config as c
from shoal.messages import TrainResult
from shoal.strategy import FedAvg, RoundContext

X = np.zeros(3, np.float32)
D1 = np.array([1.0, -2.0, 0.5], np.float32)
D2 = np.array([-0.4, 0.8, 2.0], np.float32)


def result(cid: str, delta: np.ndarray, n: int, steps: int | None) -> TrainResult:
    metrics = {} if steps is None else {"local_steps": steps}
    return TrainResult(1, cid, n, {"delta": delta}, metrics)


def test_unequal_steps_follow_wang_et_al():
    # p = (1/4, 3/4), tau = (2, 4): tau_eff = 3.5; x + tau_eff * sum_i p_i Delta_i / tau_i
    got = FedAvg(normalize_local_steps=True).aggregate_train(
        RoundContext(1, 0), X, [result("a", D1, 1, 2), result("b", D2, 3, 4)], []
    )
    np.testing.assert_allclose(got, 3.5 * (0.25 * D1 / 2 + 0.75 * D2 / 4), rtol=1e-6)


def test_equal_steps_is_fedavg():
    rs = [result("a", D1, 1, 5), result("b", D2, 3, 5)]
    nova = FedAvg(normalize_local_steps=True).aggregate_train(RoundContext(1, 0), X, rs, [])
    plain = FedAvg().aggregate_train(RoundContext(1, 0), X, rs, [])
    np.testing.assert_allclose(nova, plain, rtol=1e-6)


def test_results_without_a_step_count_are_left_out():
    rs = [result("a", D1, 1, 2), result("b", D2, 3, None)]
    got = FedAvg(normalize_local_steps=True).aggregate_train(RoundContext(1, 0), X, rs, [])
    np.testing.assert_allclose(got, D1, rtol=1e-6)
    assert c.StrategyConfig(name="fednova").build().normalize_local_steps
