"""Aggregators: pure functions from stacked client updates to one update.

Signature: ``(updates [n, d] float32, weights [n] >= 0) -> [d] float32``, a new array.
Accumulation is in float64 in a fixed order, so results do not depend on BLAS threading
and the same inputs always give the same bits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Aggregator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check(updates: np.ndarray, weights: np.ndarray) -> None:
    if updates.ndim != 2 or weights.shape != (updates.shape[0],):
        raise ValueError(f"expected updates [n, d] and weights [n], got {updates.shape} and {weights.shape}")
    if updates.shape[0] == 0:
        raise ValueError("cannot aggregate zero updates")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("weights must be finite and non-negative")


def weighted_mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k w_k u_k / sum_k w_k: FedAvg's rule with w_k = n_k (McMahan et al. 2017, Alg. 1)."""
    _check(updates, weights)
    total = float(weights.sum())
    if total <= 0:
        raise ValueError("weights sum to zero: no client reported any examples")
    acc = np.zeros(updates.shape[1], dtype=np.float64)
    for u, w in zip(updates, weights, strict=True):
        acc += u * np.float64(w)  # a numpy float64 scalar: the product is float64 (NEP 50)
    return (acc / total).astype(np.float32)


def mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The unweighted mean: every client counts once, whatever its data size."""
    return weighted_mean(updates, np.ones_like(weights))
