"""Aggregators: pure functions from a cohort of client updates to one update.

Signature: ``(updates: n vectors [d] float32, weights [n] >= 0) -> [d] float32``, a new
array. Updates come as a sequence rather than a stacked matrix: the mean streams over them
without copying n x d floats (80 MB a round for 100 clients of the 2NN); aggregators that
need the matrix (median, Krum) stack it themselves.
Accumulation is in float64 in a fixed order, elementwise, so results do not depend on
threading and the same inputs always give the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from shoal.params import read_only_tensor

Aggregator = Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]


def _check(updates: Sequence[np.ndarray], weights: np.ndarray) -> None:
    if len(updates) == 0:
        raise ValueError("cannot aggregate zero updates")
    if weights.shape != (len(updates),):
        raise ValueError(f"expected {len(updates)} weights, got shape {weights.shape}")
    shape = updates[0].shape
    if len(shape) != 1 or any(u.shape != shape for u in updates):
        raise ValueError("updates must be flat vectors of one length")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("weights must be finite and non-negative")


def weighted_mean(updates: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """sum_k w_k u_k / sum_k w_k: FedAvg's rule with w_k = n_k (McMahan et al. 2017, Alg. 1)."""
    _check(updates, weights)
    total = float(weights.sum())
    if total <= 0:
        raise ValueError("weights sum to zero: no client reported any examples")
    # torch's in-place multiply-add runs in one pass on all cores (numpy's needs a float64
    # temporary per update); elementwise, so the bits do not depend on the thread count.
    acc = torch.zeros(updates[0].shape[0], dtype=torch.float64)
    for u, w in zip(updates, weights, strict=True):
        acc.add_(read_only_tensor(np.asarray(u)), alpha=float(w))
    return (acc / total).to(torch.float32).numpy()


def mean(updates: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The unweighted mean: every client counts once, whatever its data size."""
    return weighted_mean(updates, np.ones_like(weights))
