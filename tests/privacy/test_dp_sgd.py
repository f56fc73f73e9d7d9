from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import shoal
from shoal.client import TorchTrainer, run_train
from shoal.messages import Failure, TrainTask
from shoal.models import mlp
from shoal.params import from_module
from shoal.privacy.dp_sgd import STEPS, example_epsilon


@pytest.fixture(scope="module")
def client(fed_digits):
    return fed_digits["0"]


def test_one_step_clips_each_example_before_averaging(client):
    n = len(client.train)
    model = lambda: mlp((1, 8, 8), 10, (8,))  # noqa: E731
    params, spec = from_module(model())
    lr, bound = 0.5, 0.05
    # batch_size >= n: every example joins (q = 1); noise 1e-7 * bound is far below float32 resolution here
    hp = TorchTrainer(
        lr=lr, local_steps=1, batch_size=n, dp_sgd_noise_multiplier=1e-7, dp_sgd_max_grad_norm=bound
    )
    result = hp.build(model).train(TrainTask(1, "0", params, 5), client, {})

    net = model()
    names = [name for name, _ in net.named_parameters()]
    theta = {k: v.detach() for k, v in spec.split(torch.from_numpy(params)).items()}

    def loss(p, x, y):
        return F.cross_entropy(functional_call(net, p, (x[None],)), y[None])

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))(theta, client.train.x, client.train.y)
    flat = torch.cat([per_example[k].reshape(n, -1) for k in names], dim=1).double()
    scale = torch.clamp(bound / (flat.norm(dim=1) + 1e-6), max=1.0)
    expected = -lr * (flat * scale[:, None]).sum(0) / n
    np.testing.assert_allclose(result.payload["delta"], expected.numpy(), atol=2e-6)


def test_example_epsilon_composes_over_every_round_the_client_trained(client):
    model = lambda: mlp((1, 8, 8), 10, (8,))  # noqa: E731
    params, _ = from_module(model())
    hp = TorchTrainer(local_steps=4, batch_size=16, dp_sgd_noise_multiplier=1.2, dp_sgd_noise="seeded")
    app, state = hp.build(model), {}
    first = app.train(TrainTask(1, "0", params, 1), client, state)
    second = app.train(TrainTask(2, "0", params, 2), client, state)
    rate = 16 / len(client.train)
    assert int(state[STEPS][0]) == 8
    assert first.metrics["example_epsilon"] == pytest.approx(example_epsilon(rate, 1.2, 4, 1e-5))
    assert second.metrics["example_epsilon"] == pytest.approx(example_epsilon(rate, 1.2, 8, 1e-5))


def test_models_opacus_cannot_handle_fail_with_the_reason(client):
    model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))  # noqa: E731
    params, _ = from_module(model())
    out = run_train(
        TorchTrainer(dp_sgd_noise_multiplier=1.0).build(model), TrainTask(1, "0", params, 1), client
    )
    assert isinstance(out, Failure) and "per-example gradients" in out.reason


def test_dp_sgd_run_records_the_least_private_client(fed_digits, small_mlp):
    hp = TorchTrainer(lr=0.2, batch_size=16, dp_sgd_noise_multiplier=1.0, dp_sgd_noise="seeded")
    history = shoal.simulate(small_mlp, fed_digits, shoal.FedAvg(clients_per_round=4), hp, rounds=2)
    eps = [r["example_epsilon_max"] for r in history.records]
    assert all(0 < e < float("inf") for e in eps)
