"""Pre-aggregation: rewrite the cohort's updates before a robust aggregator sees them.

- ``clip``: scale every update down to L2 norm at most ``threshold`` (norm bounding, Sun
  et al. 2019): a scaled-up update (model replacement) loses its lever.
- ``nnm``: replace each update by the mean of its n - f nearest neighbours, itself
  included (nearest-neighbour mixing, Allouah et al. 2023): it shrinks the spread of the
  honest updates, which is what lets median-like rules hold against ALIE-style attacks.
- ``bucketing``: shuffle, cut into buckets of ``bucket_size`` and average each bucket
  (Karimireddy et al. 2022): non-IID honest updates look more alike, at the cost of f
  attackers reaching up to f buckets. The shuffle is seeded from the updates themselves
  (SHA-256 of their bytes), so it reproduces, and no client can choose its bucket
  without knowing every other update.

:class:`RobustPipeline` composes them in order in front of an aggregator and is itself an
:data:`~shoal.strategy.aggregators.Aggregator`.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from shoal.errors import ConfigError
from shoal.strategy.aggregators import Aggregator
from shoal.strategy.robust import squared_distances


@dataclass(frozen=True)
class PreAggregator(abc.ABC):
    name: ClassVar[str] = ""

    @abc.abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """[n, d] float64 updates -> [m, d] (m <= n)."""


@dataclass(frozen=True)
class Clip(PreAggregator):
    threshold: float = 1.0
    name = "clip"

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ConfigError(f"clip threshold must be > 0, got {self.threshold}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(x, axis=1)
        scale = np.minimum(1.0, self.threshold / np.maximum(norms, 1e-300))
        out: np.ndarray = x * scale[:, None]
        return out


@dataclass(frozen=True)
class NearestNeighborMixing(PreAggregator):
    f: int = 0
    name = "nnm"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n - self.f < 1:
            raise ConfigError(f"nnm mixes the n - f nearest updates; n = {n} leaves none for f = {self.f}")
        nearest = np.argsort(squared_distances(x), axis=1, kind="stable")[:, : n - self.f]  # self first
        out: np.ndarray = x[nearest].mean(axis=1)
        return out


@dataclass(frozen=True)
class Bucketing(PreAggregator):
    bucket_size: int = 2
    name = "bucketing"

    def __post_init__(self) -> None:
        if self.bucket_size < 1:
            raise ConfigError(f"bucket_size must be >= 1, got {self.bucket_size}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest()[:8], "little")
        order = np.random.default_rng(seed).permutation(x.shape[0])
        buckets = [order[i : i + self.bucket_size] for i in range(0, len(order), self.bucket_size)]
        return np.stack([x[b].mean(axis=0) for b in buckets])


@dataclass(frozen=True)
class RobustPipeline:
    """Pre-aggregators in order, then ``aggregator`` (which ignores the weights)."""

    aggregator: Aggregator
    pre: tuple[PreAggregator, ...] = ()

    def __call__(self, updates: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
        if len(updates) == 0:
            raise ValueError("cannot aggregate zero updates")
        x = np.stack([np.asarray(u, dtype=np.float64) for u in updates])
        for step in self.pre:
            x = step(x)
        return self.aggregator(list(x), np.ones(x.shape[0]))
