"""FedDyn pinned against Acar et al. 2021, Algorithm 1, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shoal
from shoal.config import StrategyConfig
from shoal.data import FederatedDataset
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.models import mlp
from shoal.runtime import InProcessBackend, VectorizedBackend
from shoal.strategy import FedDyn
from shoal.strategy.feddyn import LOCAL_GRADIENT

K, LR, ALPHA = 3, 0.2, 0.1


@pytest.fixture(scope="module")
def three_clients() -> FederatedDataset:
    rng = np.random.default_rng(1)
    clients = {}
    for cid, shift in (("a", 1.0), ("b", -1.0), ("c", 0.0)):
        x = rng.normal(shift, 1.0, (20, 4)).astype(np.float32)
        y = (x[:, 0] - 0.5 * x[:, 2] > shift).astype(np.int64)
        clients[cid] = ClientData(ArrayDataset.from_numpy(x, y))
    return FederatedDataset("three", clients, 2, (4,))


def linear():
    return mlp((4,), 2, ())


def _grad(w: np.ndarray, data: ArrayDataset) -> np.ndarray:
    model = linear()
    shoal.params.to_module(w.astype(np.float32), shoal.params.ParamSpec.from_module(model), model)
    model.zero_grad()
    F.cross_entropy(model(data.x), data.y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().astype(np.float64)


def _by_hand(x: np.ndarray, data: FederatedDataset, rounds: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """Algorithm 1 with full participation (m = |P| = 3), full-batch local SGD."""
    x = x.astype(np.float64)
    h = np.zeros_like(x)
    g = {cid: np.zeros_like(x) for cid in data.clients}
    for _ in range(rounds):
        thetas = {}
        for cid, client in data.clients.items():
            w = x.copy()
            for _ in range(K):  # grad of L_k(w) - <g_k, w> + alpha/2 ||w - x||^2
                w -= LR * (_grad(w, client.train) - g[cid] + ALPHA * (w - x))
            g[cid] = g[cid] - ALPHA * (w - x)
            thetas[cid] = w
        h = h - ALPHA / len(data.clients) * sum(t - x for t in thetas.values())
        x = np.mean(list(thetas.values()), axis=0) - h / ALPHA
    return x, g, h


def test_two_rounds_match_algorithm_1_by_hand(three_clients):
    trainer = shoal.TorchTrainer(lr=LR, local_steps=K, batch_size=64)  # one full batch per step
    strategy = FedDyn(clients_per_round=3, alpha=ALPHA)
    backend = InProcessBackend(trainer, linear, three_clients)
    history = shoal.simulate(linear, three_clients, strategy, trainer, rounds=2, backend=backend)
    x0, _ = shoal.runtime.initial_params(linear, 0)
    want_x, want_g, want_h = _by_hand(x0, three_clients, 2)
    np.testing.assert_allclose(history.params, want_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(strategy.h, want_h, rtol=1e-4, atol=1e-6)
    for cid in three_clients.clients:
        np.testing.assert_allclose(backend.client_states.get(cid)[LOCAL_GRADIENT], want_g[cid], atol=1e-5)


def test_the_cohort_path_runs_feddyn_like_the_one_by_one_trainer(three_clients):
    trainer = shoal.TorchTrainer(lr=LR, local_epochs=2, batch_size=8)
    seq = shoal.simulate(linear, three_clients, FedDyn(clients_per_round=2, alpha=ALPHA), trainer, rounds=4)
    vec_backend = VectorizedBackend(trainer, linear, three_clients, cohort_size=2)
    vec_backend._sequential.train = lambda tasks: pytest.fail("the cohort fell back to one by one")
    vec = shoal.simulate(
        linear,
        three_clients,
        FedDyn(clients_per_round=2, alpha=ALPHA),
        trainer,
        rounds=4,
        backend=vec_backend,
    )
    np.testing.assert_allclose(vec.params, seq.params, rtol=1e-4, atol=1e-5)
    assert len(vec_backend.state_dict()["clients"]["ids"]) == 3  # every client kept its g_k


def test_feddyn_resumes_exactly(three_clients, tmp_path):
    trainer = shoal.TorchTrainer(lr=LR, local_epochs=1, batch_size=8)
    straight = shoal.simulate(linear, three_clients, FedDyn(clients_per_round=2), trainer, rounds=4)
    shoal.simulate(linear, three_clients, FedDyn(clients_per_round=2), trainer, rounds=2, out_dir=tmp_path)
    resumed = shoal.simulate(
        linear, three_clients, FedDyn(clients_per_round=2), trainer, rounds=4, out_dir=tmp_path, resume=True
    )
    assert resumed.model_hash == straight.model_hash


def test_config_builds_feddyn_and_checks_alpha():
    strategy = StrategyConfig(name="feddyn", feddyn_alpha=0.5).build()
    assert isinstance(strategy, FedDyn) and strategy.alpha == 0.5
    assert strategy.client_config["feddyn_alpha"] == 0.5
    with pytest.raises(shoal.ConfigError, match="feddyn_alpha"):
        StrategyConfig(name="feddyn", feddyn_alpha=0.0)
