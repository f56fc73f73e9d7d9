from __future__ import annotations

import numpy as np
import pytest

from shoal.client import TorchTrainer, run_evaluate, run_train
from shoal.data import ClientData
from shoal.errors import ConfigError
from shoal.messages import EvalTask, Failure, TrainResult, TrainTask
from shoal.runtime import initial_params


@pytest.fixture()
def setup(small_mlp, fed_digits):
    params, _ = initial_params(small_mlp, 0)
    return small_mlp, fed_digits["0"], params


def task(params, **config) -> TrainTask:
    return TrainTask(1, "0", params, seed=7, config=config)


def test_steps_follow_epochs_or_local_steps(setup):
    model, data, params = setup
    n = len(data.train)
    app = TorchTrainer(lr=0.1, local_epochs=2, batch_size=10).build(model)
    assert app.train(task(params), data, {}).metrics["local_steps"] == 2 * -(-n // 10)
    app = TorchTrainer(lr=0.1, local_steps=25, batch_size=10).build(model)
    assert app.train(task(params), data, {}).metrics["local_steps"] == 25  # cycles through epochs


def test_task_config_overrides_hyperparameters(setup):
    model, data, params = setup
    app = TorchTrainer(lr=0.1, local_epochs=5, batch_size=10).build(model)
    short = app.train(task(params, local_epochs=1), data, {})
    assert short.metrics["local_steps"] == -(-len(data.train) // 10)
    tiny = app.train(task(params, lr=1e-6), data, {})
    assert np.abs(tiny.payload["delta"]).max() < 1e-4


def test_training_is_seeded_and_leaves_the_task_untouched(setup):
    model, data, params = setup
    before = params.copy()
    app = TorchTrainer(lr=0.1, batch_size=8).build(model)
    a = app.train(task(params), data, {}).payload["delta"]
    b = TorchTrainer(lr=0.1, batch_size=8).build(model).train(task(params), data, {}).payload["delta"]
    assert np.array_equal(a, b) and np.array_equal(params, before)
    other = app.train(TrainTask(1, "0", params, seed=8), data, {}).payload["delta"]
    assert not np.array_equal(a, other)


def test_adam_and_momentum_train(setup):
    model, data, params = setup
    for trainer in (
        TorchTrainer(optimizer="adam", lr=0.01),
        TorchTrainer(momentum=0.9, weight_decay=1e-4),
    ):
        result = trainer.build(model).train(task(params), data, {})
        assert isinstance(result, TrainResult) and np.abs(result.payload["delta"]).max() > 0


def test_evaluate_without_holdout_is_a_failure_not_a_crash(setup):
    model, data, params = setup
    app = TorchTrainer().build(model)
    out = run_evaluate(app, EvalTask(1, "0", params), ClientData(train=data.train))
    assert isinstance(out, Failure) and "holdout_fraction" in out.reason
    ok = run_evaluate(app, EvalTask(1, "0", params), data)
    assert 0 <= ok.metrics["accuracy"] <= 1 and ok.num_examples == len(data.test)


def test_run_train_turns_exceptions_into_failures(setup):
    model, data, params = setup
    out = run_train(TorchTrainer().build(model), task(params[:5]), data)
    assert isinstance(out, Failure) and out.kind.value == "error" and out.client_id == "0"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0}, "trainer.lr"),
        ({"batch_size": 0}, "trainer.batch_size"),
        ({"local_epochs": 0}, "local_epochs"),
        ({"momentum": 1.0}, "momentum"),
        ({"optimizer": "lbfgs"}, "lbfgs"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        TorchTrainer(**kwargs)


def test_a_batch_norm_model_trains_a_client_whose_last_batch_is_one_example():
    # 49 examples at batch size 16: the epoch's last batch holds one, which batch norm
    # cannot normalize in training; it is skipped rather than failing the client
    import torch

    import shoal
    from shoal.data import ArrayDataset, ClientData, FederatedDataset
    from shoal.models import cnn_bn

    g = torch.Generator().manual_seed(0)
    clients = {
        str(i): ClientData(
            ArrayDataset(torch.rand(49, 1, 8, 8, generator=g), torch.randint(0, 3, (49,), generator=g))
        )
        for i in range(2)
    }
    data = FederatedDataset("tiny", clients, 3, (1, 8, 8), None)
    history = shoal.simulate(
        lambda: cnn_bn((1, 8, 8), 3), data, shoal.FedAvg(clients_per_round=2),
        shoal.TorchTrainer(batch_size=16), rounds=1, eval_every=0,
    )  # fmt: skip
    assert history.records[-1]["clients_completed"] == 2 and not history.records[-1]["failures"]
