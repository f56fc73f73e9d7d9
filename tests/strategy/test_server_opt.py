from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal import config as c
from shoal.errors import ConfigError
from shoal.strategy import Adaptive, AdaptiveRule, FedAvg, ServerMomentum, ServerSGD

X0 = np.array([1.0, -2.0, 0.5], np.float32)
D1 = np.array([0.1, -0.3, 0.0], np.float32)
D2 = np.array([-0.2, 0.1, 0.4], np.float32)


def test_server_sgd_is_fedavg_with_a_server_lr():
    np.testing.assert_allclose(ServerSGD(0.5).step(X0, D1), X0 + 0.5 * D1)


def test_server_momentum_accumulates_velocity():
    opt = ServerMomentum(lr=0.5, momentum=0.9)
    x1 = opt.step(X0, D1)
    x2 = opt.step(x1, D2)
    np.testing.assert_allclose(x1, X0 + 0.5 * D1, rtol=1e-6)
    np.testing.assert_allclose(x2, x1 + 0.5 * (0.9 * D1 + D2), rtol=1e-6)


@pytest.mark.parametrize("rule", list(AdaptiveRule))
def test_adaptive_first_step_matches_reddi_et_al(rule):
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    d = D1.astype(np.float64)
    m = (1 - b1) * d
    v0 = tau**2
    v = {
        AdaptiveRule.ADAGRAD: v0 + d**2,
        AdaptiveRule.ADAM: b2 * v0 + (1 - b2) * d**2,
        AdaptiveRule.YOGI: v0 - (1 - b2) * d**2 * np.sign(v0 - d**2),
    }[rule]
    expected = X0 + lr * m / (np.sqrt(v) + tau)
    got = Adaptive(rule, lr=lr, beta1=b1, beta2=b2, tau=tau).step(X0, D1)
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6)
    assert got[2] == X0[2]  # a zero update moves nothing


@pytest.mark.parametrize(
    "make",
    [lambda: ServerMomentum(0.5, 0.9), lambda: Adaptive(AdaptiveRule.YOGI, lr=0.1)],
    ids=["momentum", "yogi"],
)
def test_state_dict_resumes_exactly(make):
    a = make()
    x = a.step(a.step(X0, D1), D2)
    b = make()
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    assert np.array_equal(a.step(x, D1), b.step(x, D1))


def test_fedadam_run_resumes_to_the_same_model(tmp_path, small_mlp, fed_digits):
    def strategy() -> FedAvg:
        return FedAvg(clients_per_round=5, server_optimizer=Adaptive(AdaptiveRule.ADAM, lr=0.03))

    trainer = shoal.TorchTrainer(lr=0.3, local_epochs=2, batch_size=16)
    full = shoal.simulate(small_mlp, fed_digits, strategy(), trainer, rounds=4, seed=9)
    shoal.simulate(small_mlp, fed_digits, strategy(), trainer, rounds=2, seed=9, out_dir=tmp_path)
    resumed = shoal.simulate(
        small_mlp, fed_digits, strategy(), trainer, rounds=4, seed=9, out_dir=tmp_path, resume=True
    )
    assert resumed.model_hash == full.model_hash
    assert full.final_accuracy is not None and full.final_accuracy > 0.5


def test_config_builds_each_strategy():
    built = {n: c.StrategyConfig(name=n).build().server_optimizer for n in c.StrategyName}
    assert isinstance(built[c.StrategyName.FEDAVG], ServerSGD) and built[c.StrategyName.FEDAVG].lr == 1.0
    assert isinstance(built[c.StrategyName.FEDAVGM], ServerMomentum)
    adam = built[c.StrategyName.FEDADAM]
    assert isinstance(adam, Adaptive) and adam.rule is AdaptiveRule.ADAM and adam.lr == 0.01
    with pytest.raises(ConfigError, match=r"strategy\.beta2 must be in"):
        c.from_dict({"strategy": {"name": "fedyogi", "beta2": 1.0}})
    with pytest.raises(ConfigError, match=r"strategy\.server_lr must be > 0"):
        c.from_dict({"strategy": {"name": "fedavgm", "server_lr": 0}})
