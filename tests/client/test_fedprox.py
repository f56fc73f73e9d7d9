from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import shoal
from shoal import config as c
from shoal.client import TorchTrainer
from shoal.messages import TrainTask
from shoal.params import from_module, to_module
from shoal.runtime import initial_params
from shoal.runtime.vectorized import VectorizedBackend


def test_proximal_step_matches_the_hand_computed_update(small_mlp, fed_digits):
    data = fed_digits["0"].train
    params, spec = initial_params(small_mlp, 0)
    mu, lr = 0.5, 0.1
    hp = TorchTrainer(lr=lr, local_steps=2, batch_size=len(data))  # full batch: no sampling
    got = hp.build(small_mlp).train(TrainTask(1, "0", params, 3, {"proximal_mu": mu}), fed_digits["0"], {})

    model = small_mlp()
    to_module(params, spec, model)
    anchor = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):  # w <- w - lr (grad f(w) + mu (w - w_global))
        model.zero_grad()
        F.cross_entropy(model(data.x), data.y).backward()
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), anchor, strict=True):
                p -= lr * (p.grad + mu * (p - p0))
    expected, _ = from_module(model)
    np.testing.assert_allclose(got.payload["delta"], expected - params, rtol=1e-5, atol=1e-7)


def test_mu_zero_is_fedavg_and_mu_pulls_toward_the_global_model(small_mlp, fed_digits):
    trainer = TorchTrainer(lr=0.3, local_epochs=3, batch_size=16)

    def run(mu: float | None) -> shoal.History:
        config = {} if mu is None else {"proximal_mu": mu}
        strategy = shoal.FedAvg(clients_per_round=5, client_config=config)
        return shoal.simulate(small_mlp, fed_digits, strategy, trainer, rounds=1, seed=4)

    assert run(0.0).model_hash == run(None).model_hash
    init, _ = initial_params(small_mlp, 4)
    moved = {mu: float(np.linalg.norm(run(mu).params - init)) for mu in (0.0, 1.0)}
    assert moved[1.0] < 0.9 * moved[0.0]


def test_vectorized_backend_runs_fedprox_like_the_sequential_one(small_mlp, fed_digits):
    trainer = TorchTrainer(lr=0.3, batch_size=16)
    strategy = shoal.FedAvg(clients_per_round=8, client_config={"proximal_mu": 1.0})
    seq = shoal.simulate(small_mlp, fed_digits, strategy, trainer, rounds=2, seed=2)
    backend = VectorizedBackend(trainer, small_mlp, fed_digits, run_seed=2)
    vec = shoal.simulate(small_mlp, fed_digits, strategy, trainer, rounds=2, seed=2, backend=backend)
    np.testing.assert_allclose(vec.params, seq.params, rtol=1e-4, atol=1e-5)
    plain = shoal.simulate(
        small_mlp, fed_digits, shoal.FedAvg(clients_per_round=8), trainer, rounds=2, seed=2
    )
    assert np.abs(plain.params - seq.params).max() > 1e-3  # the proximal term counted


def test_config_fedprox():
    strategy = c.StrategyConfig(name="fedprox", proximal_mu=1.0).build()
    assert dict(strategy.client_config) == {"proximal_mu": 1.0}
    assert dict(c.StrategyConfig(name="fedavg", proximal_mu=1.0).build().client_config) == {}
