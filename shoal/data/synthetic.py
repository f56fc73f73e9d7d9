"""FedProx's synthetic(alpha, beta) federated data (Li et al. 2020, Section 5.1).

Per device k: ``u_k ~ N(0, alpha)``, ``B_k ~ N(0, beta)`` (standard deviations);
``W_k ~ N(u_k, 1)`` [60 x 10], ``b_k ~ N(u_k, 1)`` [10]; ``v_k ~ N(B_k, 1)`` [60];
``x ~ N(v_k, diag(j^-1.2))`` for j = 1..60; ``y = argmax(softmax(x W_k + b_k))``.
alpha controls how much the local models differ, beta how much the local inputs differ.
Device sizes follow ``int(lognormal(4, 2)) + 50``; each device keeps 10% for testing.
The IID variant shares one ``W, b ~ N(0, 1)`` and draws every ``x`` around ``v = 0``.
"""

from __future__ import annotations

import numpy as np

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.errors import DataError

FEATURES, CLASSES = 60, 10


def synthetic(
    alpha: float,
    beta: float,
    num_clients: int = 30,
    seed: int = 0,
    iid: bool = False,
    test_fraction: float = 0.1,
) -> FederatedDataset:
    """Clients "0".."n-1" with their own train/test split; ``test`` is the union of the
    devices' test splits, as the paper evaluates."""
    if alpha < 0 or beta < 0:
        raise DataError(f"synthetic alpha and beta are standard deviations: >= 0, got {alpha}, {beta}")
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4, 2, num_clients).astype(int) + 50
    scale = np.sqrt(np.arange(1, FEATURES + 1, dtype=np.float64) ** -1.2)  # std of feature j
    shared_w, shared_b = rng.normal(0, 1, (FEATURES, CLASSES)), rng.normal(0, 1, CLASSES)
    clients, tests = {}, []
    for k in range(num_clients):
        if iid:
            w, b, v = shared_w, shared_b, np.zeros(FEATURES)
        else:
            u, mean_shift = rng.normal(0, alpha), rng.normal(0, beta)
            w, b = rng.normal(u, 1, (FEATURES, CLASSES)), rng.normal(u, 1, CLASSES)
            v = rng.normal(mean_shift, 1, FEATURES)
        x = v + scale * rng.standard_normal((int(sizes[k]), FEATURES))
        y = np.argmax(x @ w + b, axis=1)  # argmax of softmax = argmax of the logits
        cut = round(len(y) * (1 - test_fraction))
        train, test = ArrayDataset.from_numpy(x[:cut], y[:cut]), ArrayDataset.from_numpy(x[cut:], y[cut:])
        clients[str(k)] = ClientData(train=train, test=test)
        tests.append(test)
    union = ArrayDataset.from_numpy(
        np.concatenate([t.x.numpy() for t in tests]), np.concatenate([t.y.numpy() for t in tests])
    )
    name = "synthetic-iid" if iid else f"synthetic({alpha:g},{beta:g})"
    return FederatedDataset(name, clients, CLASSES, (FEATURES,), union, {"alpha": alpha, "beta": beta})
