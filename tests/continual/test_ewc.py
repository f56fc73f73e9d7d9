from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shoal.client import ClientAlgorithm, TorchTrainer, algorithm
from shoal.continual import ContinualConfig
from shoal.continual.ewc import (
    ANCHOR,
    FISHER,
    PENDING_ANCHOR,
    PENDING_FISHER,
    PENDING_STAGE,
    ElasticWeights,
    _linear_squares,
    _vmap_squares,
    empirical_fisher,
    ewc_term,
)
from shoal.data import ClientData, digits, iid
from shoal.errors import ConfigError
from shoal.messages import TrainTask
from shoal.models import mlp
from shoal.params import ParamSpec, from_module, to_module
from shoal.runtime import initial_params
from shoal.runtime.vectorized import CohortTrainer


@pytest.fixture(scope="module")
def clients():
    return iid(digits(), 6, seed=0)


@pytest.fixture(scope="module")
def model(clients):
    return functools.partial(mlp, clients.input_shape, 10, (8,))


class _Twice(torch.nn.Module):
    """A layer applied twice per example: its per-example gradient is no single outer product."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)

    def forward(self, x):
        return self.layer(self.layer(x.flatten(1)))


def _run(trainer):
    return type("Run", (), {"trainer": trainer, "lr": trainer.lr})()


def test_the_gradient_term_is_lambda_fisher_times_the_distance_to_the_old_model():
    rng = np.random.default_rng(0)
    fisher, old, w_global, w = (rng.random(50).astype(np.float32) for _ in range(4))
    lam = 3.5
    state = {FISHER: fisher, ANCHOR: old}
    task = TrainTask(5, "a", w_global, 1)
    term = ElasticWeights().gradient_term(
        task, state, _run(TorchTrainer(continual=ContinualConfig(ewc_lambda=lam, drift_rounds=(3,))))
    )
    applied = (term.coef + term.diag) * (w - w_global) + term.shift  # what both trainers add
    np.testing.assert_allclose(applied, lam * fisher * (w - old), rtol=1e-5, atol=1e-6)
    # and it is the gradient of EWC's penalty, (lambda / 2) sum F (w - w_old)^2 (eq. 3)
    wt = torch.tensor(w, requires_grad=True)
    (lam / 2 * (torch.tensor(fisher) * (wt - torch.tensor(old)) ** 2).sum()).backward()
    np.testing.assert_allclose(applied, wt.grad.numpy(), rtol=1e-5, atol=1e-6)
    no_stage_yet = _run(TorchTrainer(continual=ContinualConfig(ewc_lambda=lam, drift_rounds=(3,))))
    assert ElasticWeights().gradient_term(task, {}, no_stage_yet) is None  # nothing consolidated


def test_the_penalty_is_capped_where_an_sgd_step_would_overshoot_the_old_model():
    fisher = np.array([0.0, 1.0, 100.0], np.float32)
    old, w_global = np.zeros(3, np.float32), np.ones(3, np.float32)
    term = ewc_term(fisher, old, w_global, lam=1.0, lr=0.1)
    np.testing.assert_allclose(term.diag, [0.0, 1.0, 10.0])  # 100 > 1 / lr
    # one step on the penalty alone from w_global: no coordinate moves past w_old = 0
    step = w_global - 0.1 * (term.diag * (w_global - w_global) + term.shift)
    assert (step >= 0).all() and step[2] == 0


def test_the_empirical_fisher_is_the_mean_squared_per_example_gradient(clients, model):
    module = model()
    weights, spec = from_module(module)
    data = clients["0"].train
    fisher = empirical_fisher(module, weights, data, limit=len(data), seed=0)  # the MLP's one-pass form
    expected = torch.zeros(spec.num_params)
    reference = model()
    to_module(weights, spec, reference)
    for i in range(len(data)):
        reference.zero_grad()
        F.cross_entropy(reference(data.x[i : i + 1]), data.y[i : i + 1]).backward()
        expected += torch.cat([p.grad.reshape(-1) for p in reference.parameters()]) ** 2
    np.testing.assert_allclose(fisher, (expected / len(data)).numpy(), rtol=1e-4, atol=1e-8)
    assert fisher.dtype == np.float32 and fisher.shape == (spec.num_params,)
    # the general per-example path (vmap) gives the same
    spec_split = spec.split(torch.from_numpy(weights))
    squares = _vmap_squares(module, dict(spec_split), {}, data.x, data.y)
    general = torch.cat([squares[n].reshape(-1) for n in spec.names]) / len(data)
    np.testing.assert_allclose(general.numpy(), fisher, rtol=1e-4, atol=1e-8)
    assert _linear_squares(_Twice(), {}, {}, data.x, data.y) is None  # a layer used twice: not its form


def test_ewc_consolidates_at_a_new_stage(clients, model):
    ewc, trainer = (
        ElasticWeights(),
        TorchTrainer(continual=ContinualConfig(ewc_lambda=1.0, ewc_decay=0.5, drift_rounds=(3, 5))),
    )
    module, state = model(), {}
    data = ClientData(clients["0"].train)
    w1, w2, w4, w6 = (
        np.full(ParamSpec.from_module(module).num_params, v, np.float32) for v in (0.1, 0.2, 0.4, 0.6)
    )

    def train(round_, w):
        ewc.local_data(TrainTask(round_, "0", w, round_), data, _run(trainer), lambda: 10, state, module)

    train(1, w1)
    train(2, w2)  # the same stage: the later estimate replaces the earlier, nothing is consolidated
    assert FISHER not in state and int(state[PENDING_STAGE][0]) == 0
    assert np.array_equal(state[PENDING_ANCHOR], w2)
    first = state[PENDING_FISHER].copy()
    assert (first > 0).any()
    train(4, w4)  # stage 1: stage 0's last estimate becomes the penalty, about its model
    assert np.array_equal(state[ANCHOR], w2) and np.array_equal(state[FISHER], first)
    second = state[PENDING_FISHER].copy()
    train(6, w6)  # stage 2: online EWC, F <- decay F + F_pending
    np.testing.assert_allclose(state[FISHER], 0.5 * first + second, rtol=1e-6)
    assert np.array_equal(state[ANCHOR], w4)


def test_ewc_needs_its_stage_boundaries():
    with pytest.raises(ConfigError, match="ewc_lambda needs drift_rounds"):
        ContinualConfig(ewc_lambda=1.0)


class _FixedEWC(ClientAlgorithm):
    """EWC's term from arrays the task carries: the trainers' side of EWC alone."""

    name = "test_fixed_ewc"

    def active(self, task, run):
        return "test_fisher" in task.arrays

    def gradient_term(self, task, state, run):
        return ewc_term(task.arrays["test_fisher"], task.arrays["test_old"], task.params, 2.0)


@pytest.mark.parametrize(
    "hp",
    [
        TorchTrainer(lr=0.1, local_steps=5, batch_size=16),
        TorchTrainer(lr=0.1, momentum=0.5, local_steps=5, batch_size=16),
    ],
    ids=["fused", "vmap"],
)
def test_trainer_and_cohort_apply_a_diagonal_term_alike(clients, model, hp, monkeypatch):
    monkeypatch.setitem(algorithm._REGISTRY, _FixedEWC.name, _FixedEWC())
    params, spec = initial_params(model, 0)
    rng = np.random.default_rng(1)
    arrays = {
        "test_fisher": rng.gamma(0.5, 2.0, spec.num_params).astype(np.float32),  # uneven per coordinate
        "test_old": (params + rng.normal(0, 0.3, spec.num_params)).astype(np.float32),
    }
    task = TrainTask(1, "0", params, seed=3, arrays=arrays)
    one = hp.build(model).train(task, clients["0"], {})
    cohort = CohortTrainer(model, hp).train([task], [clients["0"]], [{}])[0]
    np.testing.assert_allclose(cohort.payload["delta"], one.payload["delta"], rtol=1e-4, atol=1e-6)
    plain = hp.build(model).train(TrainTask(1, "0", params, seed=3), clients["0"], {})
    assert np.abs(plain.payload["delta"] - one.payload["delta"]).max() > 1e-3  # the term counted
