"""A scikit-learn client through the same ClientApp protocol: its weights are the flat vector."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import shoal
from shoal import config as c
from shoal import experiment
from shoal.client.sklearn import SGDClassifierClient
from shoal.data import ArrayDataset, ClientData, digits, iid
from shoal.errors import ConfigError
from shoal.messages import EvalTask, TrainTask
from shoal.models import mlp


def test_sklearn_clients_learn_digits_in_simulation_and_the_server_evaluates_in_torch():
    data = iid(digits(), 8, seed=0)
    model = functools.partial(
        mlp, data.input_shape, 10, ()
    )  # one linear layer: sklearn's coef_ and intercept_
    history = shoal.simulate(
        model, data, shoal.FedAvg(clients_per_round=4), SGDClassifierClient(lr=0.01, local_epochs=2), rounds=4
    )
    assert history.final_accuracy is not None and history.final_accuracy > 0.85
    assert all(r["clients_completed"] == 4 for r in history.records)


def test_the_weights_travel_exactly_and_sklearn_agrees_with_the_torch_forward_pass():
    rng = np.random.default_rng(0)
    for k in (2, 3):
        x = rng.normal(0, 1, (60, 5)).astype(np.float32)
        y = rng.integers(0, k, 60)
        client = ClientData(ArrayDataset.from_numpy(x, y), ArrayDataset.from_numpy(x, y))
        model = functools.partial(mlp, (5,), k, ())
        app = SGDClassifierClient(lr=0.05).build(model)
        params, spec = shoal.runtime.initial_params(model, 1)
        if k == 2:  # the layout sklearn can hold for two classes: logits [-z/2, z/2]
            w = rng.normal(0, 1, 5).astype(np.float32)
            params = np.concatenate(
                [np.stack([-w / 2, w / 2]).reshape(-1), np.array([-0.1, 0.1], np.float32)]
            )
        clf = app._classifier(params, x.astype(np.float64), y)
        np.testing.assert_allclose(app._flat(clf), params, atol=1e-7)  # unchanged on the way through
        net = model()
        shoal.to_module(params, spec, net)
        torch_acc = float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
        result = app.evaluate(EvalTask(1, "a", params), client, {})
        assert result.metrics["accuracy"] == pytest.approx(torch_acc)
        trained = app.train(TrainTask(1, "a", params, seed=3), client, {})
        assert trained.payload["delta"].dtype == np.float32 and np.abs(trained.payload["delta"]).max() > 0


def test_a_config_runs_the_sklearn_client_and_refuses_a_model_it_cannot_hold(tmp_path):
    raw = {
        "rounds": 2,
        "client": "shoal.client.sklearn:sgd_classifier",
        "data": {"dataset": "digits", "num_clients": 6},
        "model": {"name": "mlp", "hidden": []},
        "strategy": {"clients_per_round": 3},
        "trainer": {"lr": 0.01, "local_epochs": 2},
    }
    history = experiment.run(c.from_dict(raw), tmp_path / "run")
    assert history.final_accuracy > 0.8
    deep = {**raw, "model": {"name": "mlp", "hidden": [16]}}
    with pytest.raises(ConfigError, match="one linear layer"):
        experiment.build(c.from_dict(deep), None)
