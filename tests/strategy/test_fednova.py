from __future__ import annotations

import numpy as np
import pytest

from shoal import config as c
from shoal.errors import ConfigError
from shoal.messages import TrainResult
from shoal.strategy import FedAvg, FedNova, RoundContext, mean
from shoal.strategy.fednova import NORM, local_norm

X = np.zeros(3, np.float32)
D1 = np.array([1.0, -2.0, 0.5], np.float32)
D2 = np.array([-0.4, 0.8, 2.0], np.float32)
CTX = RoundContext(1, 0)


def result(cid: str, delta: np.ndarray, n: int, norm: float | None) -> TrainResult:
    metrics = {} if norm is None else {NORM: norm}
    return TrainResult(1, cid, n, {"delta": delta}, metrics)


def test_unequal_steps_follow_wang_et_al():
    # p = (1/4, 3/4), ||a|| = (2, 4): tau_eff = 3.5; x + tau_eff * sum_i p_i Delta_i / ||a_i||
    got = FedNova().aggregate_train(CTX, X, [result("a", D1, 1, 2), result("b", D2, 3, 4)], [])
    np.testing.assert_allclose(got, 3.5 * (0.25 * D1 / 2 + 0.75 * D2 / 4), rtol=1e-6)


def test_tau_eff_uses_the_aggregators_weights():
    # a uniform aggregator: p = (1/2, 1/2) in both sums, tau_eff = 3
    got = FedNova(aggregator=mean).aggregate_train(CTX, X, [result("a", D1, 1, 2), result("b", D2, 3, 4)], [])
    np.testing.assert_allclose(got, 3.0 * (0.5 * D1 / 2 + 0.5 * D2 / 4), rtol=1e-6)


def test_equal_steps_is_fedavg():
    rs = [result("a", D1, 1, 5), result("b", D2, 3, 5)]
    nova = FedNova().aggregate_train(CTX, X, rs, [])
    plain = FedAvg().aggregate_train(CTX, X, rs, [])
    np.testing.assert_allclose(nova, plain, rtol=1e-6)


def test_results_without_a_norm_are_screened_out():
    rs = [result("a", D1, 1, 2), result("b", D2, 3, None)]
    kept, dropped = FedNova().screen(CTX, rs)
    assert [r.client_id for r in kept] == ["a"] and [f.client_id for f in dropped] == ["b"]
    np.testing.assert_allclose(FedNova().aggregate_train(CTX, X, kept, dropped), D1, rtol=1e-6)
    assert isinstance(c.StrategyConfig(name="fednova").build(), FedNova)


def test_local_norms_match_the_closed_forms():
    assert local_norm(7, 0.1) == 7
    # momentum rho: sum_{j=1..tau} (1 - rho^j) / (1 - rho), counted term by term
    rho, tau = 0.9, 5
    expected = sum((1 - rho**j) / (1 - rho) for j in range(1, tau + 1))
    assert local_norm(tau, 0.1, momentum=rho) == pytest.approx(expected)
    # proximal mu with lr eta: sum_{j=0..tau-1} (1 - eta mu)^j
    assert local_norm(tau, 0.1, mu=2.0) == pytest.approx(sum(0.8**j for j in range(tau)))
    with pytest.raises(ValueError, match="momentum with a proximal"):
        local_norm(3, 0.1, momentum=0.5, mu=1.0)


def test_momentum_sgd_moves_by_lr_times_norm_times_gradient():
    # a constant gradient g: momentum SGD moves by -lr * ||a||_1 * g exactly
    import torch

    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    for _ in range(6):
        opt.zero_grad()
        (w * 2.0).sum().backward()
        opt.step()
    assert float(w.detach()) == pytest.approx(-0.1 * local_norm(6, 0.1, momentum=0.9) * 2.0, rel=1e-5)


def test_config_refuses_what_fednova_cannot_normalize():
    with pytest.raises(ConfigError, match="fednova"):
        c.from_dict({"strategy": {"name": "fednova"}, "trainer": {"optimizer": "adam"}})
    with pytest.raises(ConfigError, match="scaffold"):
        c.from_dict({"strategy": {"name": "scaffold"}, "trainer": {"momentum": 0.9}})
