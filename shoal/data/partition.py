"""Split a centralized dataset across simulated clients.

The ``*_indices`` functions are pure: labels (or a size) and a generator in, one index
array per client out. The dataset-level helpers (:func:`iid`, :func:`dirichlet`,
:func:`shards`, :func:`quantity_skew`) wrap them into a :class:`FederatedDataset`, with an
optional per-client holdout for federated evaluation.
"""

from __future__ import annotations

import numpy as np

from shoal.config.names import Partition
from shoal.data.datasets import ClientData, FederatedDataset, LabeledData
from shoal.errors import DataError


def _check_clients(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise DataError(f"cannot give {num_clients} clients at least one of only {n} samples")


def iid_indices(n: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, then deal out equal parts (sizes differ by at most one)."""
    _check_clients(n, num_clients)
    return [np.sort(p) for p in np.array_split(rng.permutation(n), num_clients)]


def dirichlet_indices(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 2,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label skew: each class is split across clients in proportions drawn from Dir(alpha).

    Small ``alpha`` (0.1) gives clients dominated by one or two classes; large ``alpha``
    (100) approaches IID (Hsu et al. 2019). Draws are repeated until every client has at
    least ``min_size`` samples.
    """
    _check_clients(len(labels), num_clients)
    if alpha <= 0:
        raise DataError(f"dirichlet_alpha must be > 0, got {alpha}")
    if min_size * num_clients > len(labels):
        raise DataError(f"{num_clients} clients x min_size {min_size} exceeds {len(labels)} samples")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, piece in enumerate(np.split(idx, cuts)):
                parts[client].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise DataError(
        f"no Dirichlet({alpha}) draw in {max_tries} tries gave all {num_clients} clients "
        f">= {min_size} samples; raise dirichlet_alpha or lower num_clients"
    )


def shard_indices(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """McMahan et al. 2017's pathological non-IID split: sort by label, cut into
    ``num_clients * shards_per_client`` equal shards, give each client that many at random."""
    _check_clients(len(labels), num_clients)
    if shards_per_client < 1:
        raise DataError(f"shards_per_client must be >= 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise DataError(f"{num_shards} shards requested from only {len(labels)} samples")
    # Random tie-break inside each label, so which samples share a shard is seeded too.
    order = np.lexsort((rng.random(len(labels)), labels))
    shard_list = np.array_split(order, num_shards)
    assignment = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shard_list[s] for s in row])) for row in assignment]


def quantity_skew_indices(
    n: int, num_clients: int, sigma: float, rng: np.random.Generator, min_size: int = 2
) -> list[np.ndarray]:
    """IID labels, log-normal client sizes: a few heavy users, many light ones."""
    _check_clients(n, num_clients)
    if sigma < 0:
        raise DataError(f"quantity_sigma must be >= 0, got {sigma}")
    if min_size * num_clients > n:
        raise DataError(f"{num_clients} clients x min_size {min_size} exceeds {n} samples")
    weights = rng.lognormal(0.0, sigma, num_clients)
    extra = n - min_size * num_clients
    sizes = min_size + np.floor(weights / weights.sum() * extra).astype(int)
    sizes[np.argsort(-weights)[: n - sizes.sum()]] += 1  # hand out the rounding remainder
    return [np.sort(p) for p in np.split(rng.permutation(n), np.cumsum(sizes)[:-1])]


def federate(
    data: LabeledData,
    parts: list[np.ndarray],
    *,
    holdout_fraction: float = 0.0,
    seed: int = 0,
    description: dict[str, str | int | float] | None = None,
) -> FederatedDataset:
    """Make clients "0".."n-1" from index arrays; optionally hold out part of each for eval."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    rng = np.random.default_rng(seed)
    clients = {}
    for i, idx in enumerate(parts):
        idx = rng.permutation(idx)
        k = round(len(idx) * holdout_fraction)
        if len(idx) - k < 1:
            raise DataError(f"client {i} would have no training samples left after the holdout")
        test = data.train.subset(np.sort(idx[:k])) if k else None
        clients[str(i)] = ClientData(train=data.train.subset(np.sort(idx[k:])), test=test)
    return FederatedDataset(
        name=data.name,
        clients=clients,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        test=data.test,
        description=description or {},
    )


def partition(
    data: LabeledData,
    scheme: Partition | str,
    num_clients: int,
    *,
    seed: int = 0,
    dirichlet_alpha: float = 0.5,
    shards_per_client: int = 2,
    quantity_sigma: float = 1.0,
    holdout_fraction: float = 0.0,
) -> FederatedDataset:
    """One entry point for every scheme; the config's ``[data]`` section maps onto it."""
    scheme = Partition(scheme)
    rng = np.random.default_rng(seed)
    labels = data.train.y.numpy()
    desc: dict[str, str | int | float] = {"partition": scheme.value, "num_clients": num_clients}
    if scheme is Partition.IID:
        parts = iid_indices(len(labels), num_clients, rng)
    elif scheme is Partition.DIRICHLET:
        parts = dirichlet_indices(labels, num_clients, dirichlet_alpha, rng)
        desc["dirichlet_alpha"] = dirichlet_alpha
    elif scheme is Partition.SHARDS:
        parts = shard_indices(labels, num_clients, shards_per_client, rng)
        desc["shards_per_client"] = shards_per_client
    else:
        parts = quantity_skew_indices(len(labels), num_clients, quantity_sigma, rng)
        desc["quantity_sigma"] = quantity_sigma
    return federate(data, parts, holdout_fraction=holdout_fraction, seed=seed + 1, description=desc)


def iid(
    data: LabeledData, num_clients: int, seed: int = 0, holdout_fraction: float = 0.0
) -> FederatedDataset:
    return partition(data, Partition.IID, num_clients, seed=seed, holdout_fraction=holdout_fraction)


def dirichlet(
    data: LabeledData, num_clients: int, alpha: float, seed: int = 0, holdout_fraction: float = 0.0
) -> FederatedDataset:
    return partition(
        data,
        Partition.DIRICHLET,
        num_clients,
        seed=seed,
        dirichlet_alpha=alpha,
        holdout_fraction=holdout_fraction,
    )


def shards(
    data: LabeledData,
    num_clients: int,
    shards_per_client: int = 2,
    seed: int = 0,
    holdout_fraction: float = 0.0,
) -> FederatedDataset:
    return partition(
        data,
        Partition.SHARDS,
        num_clients,
        seed=seed,
        shards_per_client=shards_per_client,
        holdout_fraction=holdout_fraction,
    )


def quantity_skew(
    data: LabeledData,
    num_clients: int,
    sigma: float = 1.0,
    seed: int = 0,
    holdout_fraction: float = 0.0,
) -> FederatedDataset:
    return partition(
        data,
        Partition.QUANTITY_SKEW,
        num_clients,
        seed=seed,
        quantity_sigma=sigma,
        holdout_fraction=holdout_fraction,
    )
