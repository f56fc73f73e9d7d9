"""Robust aggregators: one update from n client updates when up to f of them are hostile.

Each is an :data:`~shoal.strategy.aggregators.Aggregator` (``(updates, weights) -> update``)
built for a stated number of attackers ``f``, and says how many clients it needs for that
(:meth:`RobustAggregator.needs`); fewer, and it refuses with the formula rather than
return an aggregate it cannot vouch for. Robust rules ignore the weights: a weight is a
client's own claim of its example count, which an attacker would inflate.

- ``median``: coordinate-wise median (Yin et al. 2018): n > 2f.
- ``trimmed-mean``: coordinate-wise, drop the f largest and f smallest, average the rest
  (Yin et al. 2018): n > 2f.
- ``geometric-median``: the point minimizing the sum of distances, by smoothed Weiszfeld
  iterations (RFA, Pillutla et al. 2022): n > 2f.
- ``krum`` / ``multi-krum``: the update(s) with the smallest sum of squared distances to
  their n - f - 2 nearest neighbours (Blanchard et al. 2017): n > 2f + 2. Multi-Krum
  averages the n - f best.
- ``bulyan``: n - 2f updates chosen by repeated Krum, then per coordinate the mean of the
  n - 4f values closest to their median (El Mhamdi et al. 2018): n >= 4f + 3.
- ``centered-clipping``: from a robust start, ``v += mean_i clip(x_i - v, tau)``, a few
  times (Karimireddy et al. 2021): n > 2f. The paper centres on the previous round's
  momentum; a stateless aggregator centres on this round's coordinate-wise median.
- ``mda``: minimum diameter averaging: the mean of the n - f updates whose largest
  pairwise distance is smallest (El Mhamdi et al. 2018; Rousseeuw 1985): n > 2f. It
  searches C(n, f) subsets, so it refuses cohorts where that passes a million.

Updates are stacked in float64 (n x d); every rule is deterministic for given inputs.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from shoal.errors import ConfigError, RoundAbortedError

MDA_MAX_SUBSETS = 1_000_000


def _stack(updates: Sequence[np.ndarray]) -> np.ndarray:
    if len(updates) == 0:
        raise ValueError("cannot aggregate zero updates")
    shape = updates[0].shape
    if len(shape) != 1 or any(u.shape != shape for u in updates):
        raise ValueError("updates must be flat vectors of one length")
    return np.stack([np.asarray(u, dtype=np.float64) for u in updates])


def squared_distances(x: np.ndarray) -> np.ndarray:
    """[n, n] squared Euclidean distances between the rows of ``x``, exact zeros on the diagonal."""
    norms = np.einsum("ij,ij->i", x, x)
    d = norms[:, None] + norms[None, :] - 2 * (x @ x.T)
    np.fill_diagonal(d, 0.0)
    out: np.ndarray = np.maximum(d, 0.0)  # rounding can take a tiny distance below zero
    return out


@dataclass(frozen=True)
class RobustAggregator(abc.ABC):
    """Base: ``f`` attackers tolerated; subclasses give ``name``, ``needs`` and ``aggregate``."""

    f: int = 0
    name: ClassVar[str] = ""
    rule: ClassVar[str] = "n > 2f"  # the tolerance, as the paper states it

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"{self.name}: the number of attackers f must be >= 0, got {self.f}")

    def needs(self) -> int:
        """The fewest clients a round must count for this rule to tolerate ``f`` attackers."""
        return 2 * self.f + 1

    def refusal(self, n: int) -> str | None:
        """Why ``n`` updates are too few to tolerate ``f`` attackers (None: enough)."""
        if n >= self.needs():
            return None
        return (
            f"{self.name} tolerates f = {self.f} attackers only with {self.rule} clients, i.e. "
            f"n >= {self.needs()}; this round has {n}"
        )

    def __call__(self, updates: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
        x = _stack(updates)
        if why := self.refusal(x.shape[0]):
            raise RoundAbortedError(why)
        out: np.ndarray = self.aggregate(x).astype(np.float32)
        return out

    @abc.abstractmethod
    def aggregate(self, x: np.ndarray) -> np.ndarray:
        """[n, d] float64 updates -> [d] aggregate."""


@dataclass(frozen=True)
class Median(RobustAggregator):
    name = "median"

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.median(x, axis=0)  # the mean of the middle two for an even n
        return out


@dataclass(frozen=True)
class TrimmedMean(RobustAggregator):
    name = "trimmed-mean"

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        kept = np.sort(x, axis=0)[self.f : n - self.f]
        out: np.ndarray = kept.mean(axis=0)
        return out


@dataclass(frozen=True)
class GeometricMedian(RobustAggregator):
    iterations: int = 100
    tolerance: float = 1e-8  # relative change of the estimate that ends the iterations
    smoothing: float = 1e-8  # nu in RFA: distances below it count as nu (no division by zero)
    name = "geometric-median"

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        z: np.ndarray = x.mean(axis=0)
        for _ in range(self.iterations):
            w = 1.0 / np.maximum(np.linalg.norm(x - z, axis=1), self.smoothing)
            new = (w[:, None] * x).sum(axis=0) / w.sum()
            moved = float(np.linalg.norm(new - z))
            z = new
            if moved <= self.tolerance * max(float(np.linalg.norm(z)), 1.0):
                break
        return z


def krum_scores(d: np.ndarray, f: int) -> np.ndarray:
    """From [n, n] squared distances: each update's sum of squared distances to its
    n - f - 2 nearest others (none left: every score is 0, and the first wins the tie)."""
    n = d.shape[0]
    nearest = np.sort(d + np.diag(np.full(n, np.inf)), axis=1)[:, : max(n - f - 2, 0)]
    scores: np.ndarray = nearest.sum(axis=1)
    return scores


@dataclass(frozen=True)
class Krum(RobustAggregator):
    """Krum with ``m = 1``; Multi-Krum averages the ``m`` best (None: n - f)."""

    m: int | None = 1
    name = "krum"
    rule = "n > 2f + 2"

    def needs(self) -> int:
        return 2 * self.f + 3

    def chosen(self, x: np.ndarray) -> np.ndarray:
        """Indices of the ``m`` lowest Krum scores, lowest first (ties by index)."""
        m = x.shape[0] - self.f if self.m is None else self.m
        return np.argsort(krum_scores(squared_distances(x), self.f), kind="stable")[:m]

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x[self.chosen(x)].mean(axis=0)
        return out


@dataclass(frozen=True)
class MultiKrum(Krum):
    m: int | None = None
    name = "multi-krum"


@dataclass(frozen=True)
class Bulyan(RobustAggregator):
    name = "bulyan"
    rule = "n >= 4f + 3"

    def needs(self) -> int:
        return 4 * self.f + 3

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        n, f = x.shape[0], self.f
        d = squared_distances(x)  # once: each round of Krum reads the rows still left
        left, picked = list(range(n)), []
        for _ in range(n - 2 * f):  # theta = n - 2f rounds of Krum over what is left
            best = int(np.argsort(krum_scores(d[np.ix_(left, left)], f), kind="stable")[0])
            picked.append(left.pop(best))
        chosen = x[picked]  # theta x d
        beta = chosen.shape[0] - 2 * f
        median = np.median(chosen, axis=0)
        closest = np.argsort(np.abs(chosen - median), axis=0, kind="stable")[:beta]
        out: np.ndarray = np.take_along_axis(chosen, closest, axis=0).mean(axis=0)
        return out


@dataclass(frozen=True)
class CenteredClipping(RobustAggregator):
    tau: float = 1.0  # clipping radius around the centre, in update units
    iterations: int = 3
    name = "centered-clipping"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tau > 0 or self.iterations < 1:
            raise ConfigError(
                f"centered-clipping needs tau > 0 and iterations >= 1, got {self.tau}, {self.iterations}"
            )

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        v = np.median(x, axis=0)
        for _ in range(self.iterations):
            diff = x - v
            norms = np.linalg.norm(diff, axis=1)
            scale = np.minimum(1.0, self.tau / np.maximum(norms, 1e-12))
            v = v + (diff * scale[:, None]).mean(axis=0)
        out: np.ndarray = v
        return out


@dataclass(frozen=True)
class MinimumDiameterAveraging(RobustAggregator):
    name = "mda"

    def refusal(self, n: int) -> str | None:
        if why := super().refusal(n):
            return why
        if math.comb(n, self.f) > MDA_MAX_SUBSETS:
            return (
                f"mda searches C(n, f) = C({n}, {self.f}) subsets, more than {MDA_MAX_SUBSETS:,}; "
                "use a smaller cohort or another aggregator (multi-krum, geometric-median)"
            )
        return None

    def aggregate(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        d = squared_distances(x)
        best, best_diameter = tuple(range(n - self.f)), math.inf
        for dropped in itertools.combinations(range(n), self.f):
            kept = np.setdiff1d(np.arange(n), dropped)
            diameter = d[np.ix_(kept, kept)].max()
            if diameter < best_diameter:
                best, best_diameter = tuple(kept), diameter
        out: np.ndarray = x[list(best)].mean(axis=0)
        return out


AGGREGATORS: dict[str, type[RobustAggregator]] = {
    a.name: a for a in (Median, TrimmedMean, GeometricMedian, Krum, MultiKrum, Bulyan, CenteredClipping,
                        MinimumDiameterAveraging)
}  # fmt: skip
