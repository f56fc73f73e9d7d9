from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from shoal.client import TorchTrainer
from shoal.data import digits, quantity_skew
from shoal.messages import TrainTask
from shoal.runtime import initial_params
from shoal.runtime.dense_cohort import dense_plan
from shoal.runtime.vectorized import CohortTrainer


def test_dense_plan_reads_mlps_only():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert dense_plan(mlp) == [True, False]
    assert dense_plan(nn.Sequential(nn.Linear(4, 2))) == [False]
    assert dense_plan(nn.Sequential(nn.Linear(4, 3, bias=False))) is None
    assert dense_plan(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))) is None
    assert dense_plan(nn.Linear(4, 2)) is None


@pytest.mark.parametrize(
    ("hidden", "batch", "epochs"),
    [((), 8, 3), ((24,), 4, 2), ((32, 16), 16, 3)],
    ids=["logistic-regression", "one-hidden-many-windows", "two-hidden"],
)
def test_fused_dense_path_equals_clients_one_by_one(hidden, batch, epochs):
    data = quantity_skew(digits(), 8, sigma=1.0, seed=1)

    def model() -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        width = 64
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 10))

    hp = TorchTrainer(lr=0.2, local_epochs=epochs, batch_size=batch)
    trainer = CohortTrainer(model, hp)
    assert trainer._dense is not None  # this test is about the fused path
    params, _ = initial_params(model, 3)
    before = params.copy()
    tasks = [TrainTask(2, c, params, seed=10 + i) for i, c in enumerate(data.client_ids)]
    app = hp.build(model)
    expected = [app.train(t, data[t.client_id], {}) for t in tasks]
    got = trainer.train(tasks, [data[t.client_id] for t in tasks])
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(b.payload["delta"], a.payload["delta"], rtol=1e-4, atol=2e-6)
        assert abs(a.metrics["train_loss"] - b.metrics["train_loss"]) < 1e-4
    assert np.array_equal(params, before)  # the global weights are never written
