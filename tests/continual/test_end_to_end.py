from __future__ import annotations

import functools

import numpy as np
import pytest

from shoal.client import TorchTrainer
from shoal.client.trainer import evaluate_module
from shoal.continual import ContinualConfig
from shoal.continual.replay import REPLAY_Y
from shoal.data import digits, iid
from shoal.data.drift import drifting
from shoal.models import mlp
from shoal.params import to_module
from shoal.runtime.simulation import Simulation
from shoal.runtime.vectorized import VectorizedBackend
from shoal.strategy.fedavg import FedAvg

ROUNDS = 6


@pytest.fixture(scope="module")
def base():
    return iid(digits(), 8, seed=0)


def _run(base, *, seed=0, vectorized=False, **continual):
    cfg = ContinualConfig(drift="new-classes", drift_rounds=[4], **continual)
    data = drifting(base, cfg.schedule(base, seed))
    model = functools.partial(mlp, data.input_shape, data.num_classes, (32,))
    trainer = TorchTrainer(lr=0.1, local_epochs=2, batch_size=16, continual=cfg)
    backend = VectorizedBackend(trainer, model, data, run_seed=seed) if vectorized else None
    sim = Simulation(model, data, FedAvg(clients_per_round=4), trainer, seed=seed, backend=backend)
    sets, module, curves = data.test_sets(), model(), []

    def score(record):  # accuracy on the old and the new classes after every round
        to_module(sim.params, sim.spec, module)
        curves.append({name: evaluate_module(module, sets[name])[1] for name in ("old", "new")})

    history = sim.run(ROUNDS, callbacks=[score])
    return sim, history, curves


def test_a_drifting_run_with_replay_and_ewc_trains_and_remembers(base):
    sim, history, curves = _run(base, replay_size=20, ewc_lambda=5.0)
    assert len(history.records) == ROUNDS and not any(r["aborted"] for r in history.records)
    assert all(r["clients_failed"] == 0 for r in history.records)
    assert history.records[-1]["replay_buffer_mean"] == 20
    assert curves[2]["old"] > 0.5  # stage 0 was learnt before the new classes came
    assert sim.data.round == ROUNDS
    states = sim.backend.client_states
    held = [states.get(cid) for cid in states.state_dict()["ids"]]
    assert held and all(len(s[REPLAY_Y]) <= 20 for s in held)
    assert any("ewc_fisher" in s for s in held)  # someone trained in both stages
    # the old classes are what the reservoirs remember once the new ones have arrived
    old = set(sim.data.schedule.groups[0])
    assert any(set(s[REPLAY_Y].tolist()) & old for s in held)


def test_a_drifting_run_is_reproducible_from_the_seed(base):
    first, _, curves = _run(base, replay_size=10)
    again, _, curves_again = _run(base, replay_size=10)
    assert np.array_equal(first.params, again.params) and curves == curves_again
    other, _, _ = _run(base, replay_size=10, seed=1)
    assert not np.array_equal(first.params, other.params)


def test_the_vectorized_backend_runs_ewc_and_replay_as_one_by_one(base):
    for settings in ({"ewc_lambda": 5.0}, {"replay_size": 10}):
        sequential, _, _ = _run(base, **settings)
        vectorized, _, _ = _run(base, vectorized=True, **settings)
        np.testing.assert_allclose(vectorized.params, sequential.params, rtol=1e-5, atol=1e-6)
