from __future__ import annotations

import functools

import numpy as np
import pytest
from torch import nn

import shoal
from shoal.client import ClientAlgorithm, TorchTrainer, algorithm
from shoal.data import digits, quantity_skew
from shoal.messages import Failure, TrainTask
from shoal.models import mlp
from shoal.runtime import initial_params
from shoal.runtime.vectorized import CohortTrainer, VectorizedBackend, cohort_supported
from shoal.strategy.feddyn import LOCAL_GRADIENT
from shoal.strategy.scaffold import CLIENT_CONTROL, CONTROL_DELTA, SERVER_CONTROL


@pytest.fixture(scope="module")
def ragged():
    # log-normal client sizes: cohorts mix 20-sample and 300-sample clients
    return quantity_skew(digits(), 12, sigma=1.0, seed=0)


@pytest.fixture(scope="module")
def model(ragged):
    return functools.partial(mlp, ragged.input_shape, 10, (32,))


@pytest.mark.parametrize(
    "hp",
    [
        TorchTrainer(lr=0.1, local_epochs=2, batch_size=16),
        TorchTrainer(lr=0.1, momentum=0.9, weight_decay=1e-3, local_epochs=2, batch_size=16),
        TorchTrainer(lr=0.05, local_steps=7, batch_size=32),
    ],
    ids=["sgd", "momentum-wd", "local-steps"],
)
def test_cohort_equals_clients_one_by_one(ragged, model, hp):
    params, _ = initial_params(model, 0)
    tasks = [TrainTask(1, c, params, seed=100 + i) for i, c in enumerate(ragged.client_ids)]
    tasks[3] = TrainTask(1, tasks[3].client_id, params, seed=7, config={"local_epochs": 1, "lr": 0.3})
    app = hp.build(model)
    one_by_one = [app.train(t, ragged[t.client_id], {}) for t in tasks]
    cohort = CohortTrainer(model, hp).train(tasks, [ragged[t.client_id] for t in tasks])
    for a, b in zip(one_by_one, cohort, strict=True):
        np.testing.assert_allclose(b.payload["delta"], a.payload["delta"], rtol=1e-5, atol=1e-6)
        assert a.metrics["local_steps"] == b.metrics["local_steps"]
        assert abs(a.metrics["train_loss"] - b.metrics["train_loss"]) < 1e-5
        assert a.num_examples == b.num_examples


@pytest.mark.parametrize(
    "hp",
    [
        TorchTrainer(lr=0.1, local_epochs=2, batch_size=16),
        TorchTrainer(lr=0.1, weight_decay=0.01, batch_size=16),
    ],
    ids=["fused", "vmap"],
)
@pytest.mark.parametrize("hook", ["fedprox", "scaffold", "feddyn"])
def test_cohort_implements_client_hooks_like_the_one_by_one_trainer(ragged, model, hp, hook):
    params, spec = initial_params(model, 0)
    rng = np.random.default_rng(0)
    control = {SERVER_CONTROL: rng.normal(0, 0.1, spec.num_params).astype(np.float32)}
    config = {"proximal_mu": 0.5} if hook == "fedprox" else {"feddyn_alpha": 0.3} if hook == "feddyn" else {}
    arrays = control if hook == "scaffold" else {}
    tasks = [TrainTask(1, c, params, 100 + i, config, arrays) for i, c in enumerate(ragged.client_ids)]
    # half the clients already hold state from an earlier round (a control variate, FedDyn's g_k)
    key = CLIENT_CONTROL if hook == "scaffold" else LOCAL_GRADIENT
    states = [
        {key: rng.normal(0, 0.1, spec.num_params).astype(np.float32)} if i % 2 else {}
        for i in range(len(tasks))
    ]
    app = hp.build(model)
    seq_states = [dict(s) for s in states]
    one_by_one = [app.train(t, ragged[t.client_id], s) for t, s in zip(tasks, seq_states, strict=True)]
    cohort = CohortTrainer(model, hp).train(tasks, [ragged[t.client_id] for t in tasks], states)
    for a, b, sa, sb in zip(one_by_one, cohort, seq_states, states, strict=True):
        np.testing.assert_allclose(b.payload["delta"], a.payload["delta"], rtol=1e-4, atol=1e-6)
        assert set(a.payload) == set(b.payload)
        if hook == "scaffold":
            np.testing.assert_allclose(
                b.payload[CONTROL_DELTA], a.payload[CONTROL_DELTA], rtol=1e-3, atol=1e-4
            )
        if hook != "fedprox":
            np.testing.assert_allclose(sb[key], sa[key], rtol=1e-3, atol=1e-4)
    plain = CohortTrainer(model, hp).train(
        [TrainTask(1, t.client_id, params, t.seed) for t in tasks[:2]],
        [ragged[t.client_id] for t in tasks[:2]],
    )
    assert np.abs(plain[1].payload["delta"] - cohort[1].payload["delta"]).max() > 1e-4  # the hook counted


class _PersonalHead(ClientAlgorithm):
    name = "personal_head"

    def active(self, task, run):
        return "personal_head" in task.arrays

    def cohort_unsupported(self):
        return "its head trains apart"


def test_cohort_refuses_a_client_algorithm_it_cannot_run(ragged, model, monkeypatch):
    monkeypatch.setitem(algorithm._REGISTRY, "personal_head", _PersonalHead())
    params, _ = initial_params(model, 0)
    with pytest.raises(ValueError, match="personal_head: its head trains apart"):
        CohortTrainer(model, TorchTrainer()).train(
            [TrainTask(1, "0", params, 1, arrays={"personal_head": params})], [ragged["0"]]
        )


def test_vectorized_run_matches_sequential_run(ragged, model):
    hp = TorchTrainer(lr=0.1, local_epochs=2, batch_size=16)
    seq = shoal.simulate(model, ragged, shoal.FedAvg(clients_per_round=6), hp, rounds=3, seed=2)
    vec = shoal.simulate(
        model,
        ragged,
        shoal.FedAvg(clients_per_round=6),
        hp,
        rounds=3,
        seed=2,
        backend=VectorizedBackend(hp, model, ragged, cohort_size=4, run_seed=2),
    )
    np.testing.assert_allclose(vec.params, seq.params, rtol=1e-5, atol=1e-6)
    assert [r["clients_completed"] for r in vec.records] == [6, 6, 6]


def test_unsupported_models_and_optimizers_say_why(model):
    assert cohort_supported(model(), TorchTrainer()) is None
    assert "SGD only" in (cohort_supported(model(), TorchTrainer(optimizer="adam")) or "")
    with_dropout = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.5))
    assert "Dropout" in (cohort_supported(with_dropout, TorchTrainer()) or "")
    with pytest.raises(ValueError, match="cannot vectorize"):
        CohortTrainer(lambda: with_dropout, TorchTrainer())


def test_a_bad_client_fails_alone(ragged, model):
    hp = TorchTrainer(lr=0.1, batch_size=16)
    backend = VectorizedBackend(hp, model, ragged, cohort_size=8)
    params, _ = initial_params(model, 0)
    tasks = [TrainTask(1, c, params, seed=i) for i, c in enumerate(ragged.client_ids[:5])]
    tasks.append(TrainTask(1, "nobody", params, seed=9))
    tasks.append(TrainTask(1, ragged.client_ids[5], params[:-3], seed=9))  # wrong-size weights
    out = backend.train(tasks)
    kinds = [type(o).__name__ for o in out]
    assert kinds == ["TrainResult"] * 5 + ["Failure", "Failure"]
    assert isinstance(out[-2], Failure) and "no such client" in out[-2].reason
