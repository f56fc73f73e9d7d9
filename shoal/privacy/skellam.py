"""What the distributed Skellam mechanism costs: its RDP bound, the sensitivity after
rounding to integers, and a ledger of the rounds released.

The bound (Agarwal, Kairouz, Liu, NeurIPS 2021, arXiv:2110.04995, the multi-dimensional
Skellam mechanism's RDP, Section 3): adding independent symmetric Skellam noise of
variance ``mu`` to each coordinate of an integer vector whose L2 and L1 sensitivities are
``D2`` and ``D1`` is ``(alpha, eps(alpha))``-RDP for every integer ``alpha > 1``, with

    eps(alpha) = alpha D2^2 / (2 mu) + min( ((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu) )

The first term is the Gaussian mechanism's at variance ``mu``; the rest is what being
discrete costs, and vanishes as ``mu`` grows. ``mu`` is the variance of the *sum's* noise:
Skellam noise is closed under addition, so ``s`` devices adding variance ``mu_1`` each
give exactly Skellam noise of variance ``s mu_1``. Symmetric Skellam of variance ``mu`` is
Poisson(mu / 2) - Poisson(mu / 2).

The sensitivities after scaling by ``gamma`` and rounding (Kairouz, Liu, Steinke, ICML
2021, the distributed discrete Gaussian, Theorem 1 / Proposition 22: conditional
randomized rounding): a vector of L2 norm at most ``g = gamma c`` in ``D`` dimensions,
rounded stochastically coordinate by coordinate and rounded again until its norm is at
most

    D2 = min( g + sqrt(D), sqrt(g^2 + D / 4 + sqrt(2 ln(1 / beta)) (g + sqrt(D) / 2)) )

(each try passes with probability at least ``1 - beta``), and ``D1 = D2 min(sqrt(D), D2)``
(integer vectors have ``||x||_1 <= ||x||_2^2``).

Confirmed against google-research/federated ``distributed_dp/accounting_utils.py``
(``_skellam_rdp``, written there in float units: scale the sensitivities by ``gamma``
and the variance by ``gamma^2`` to get the form above; ``rounded_l2_norm_bound``,
``rounded_l1_norm_bound``) and ``distributed_skellam_query.py`` (Poisson rate
``stddev^2 / 2`` on each side). RDP converts to (epsilon, delta) with ``dp-accounting``
(Canonne, Kamath, Steinke 2020, Proposition 12). No amplification by sampling is claimed:
every round is composed as released in full.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

from shoal.errors import CheckpointError, ConfigError

ORDERS = np.array([*range(2, 129), 256], dtype=np.float64)  # integer orders: the bound needs them


def rounded_l2_bound(norm: float, dim: int, beta: float) -> float:
    """``D2``: the L2 norm a vector of norm ``norm`` (already scaled) keeps after conditional
    randomized rounding to integers in ``dim`` dimensions (``beta = 0``: unconditional)."""
    plain = norm + math.sqrt(dim)
    if beta == 0:
        return plain
    squared = norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2)
    return min(plain, math.sqrt(squared))


def rounded_l1_bound(l2: float, dim: int) -> float:
    """``D1`` of an integer vector of L2 norm at most ``l2``."""
    return l2 * min(math.sqrt(dim), l2)


def skellam_rdp(l1: float, l2: float, variance: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """RDP of Skellam noise of ``variance`` on a query of sensitivities ``l1``, ``l2``, at ``orders``."""
    a, mu = orders, variance
    discrete = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * mu**2), 3 * l1 / (2 * mu))
    rdp: np.ndarray = a * l2**2 / (2 * mu) + discrete
    return rdp


def round_rdp(clip_norm: float, gamma: float, dim: int, beta: float, variance: float) -> np.ndarray:
    """One round: updates clipped to ``clip_norm``, scaled by ``gamma``, rounded in ``dim``
    (padded) dimensions, under summed Skellam noise of ``variance`` (ring units)."""
    l2 = rounded_l2_bound(clip_norm * gamma, dim, beta)
    return skellam_rdp(rounded_l1_bound(l2, dim), l2, variance)


def epsilon_of(rdp: np.ndarray, delta: float) -> float:
    value = float(rdp_privacy_accountant.compute_epsilon(ORDERS, rdp, delta)[0])
    return value if math.isfinite(value) else float("inf")


class SkellamLedger:
    """The rounds released so far, each as (gamma, padded dimension, clients whose noise is
    in the sum), and epsilon over them. Its state replays exactly on resume; a ledger made
    under another mechanism (noise multiplier, clip norm, minimum clients, beta, delta) is
    refused, as :class:`~shoal.privacy.accounting.PrivacyLedger` does."""

    def __init__(
        self, noise_multiplier: float, clip_norm: float, min_clients: int, beta: float, delta: float
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        self.noise_multiplier, self.clip_norm, self.min_clients = noise_multiplier, clip_norm, min_clients
        self.beta, self.delta = beta, delta
        self.rounds: dict[tuple[float, int, int], int] = {}  # (gamma, dim, noised clients) -> rounds
        self._curves: dict[tuple[float, int, int], np.ndarray] = {}

    def local_variance(self, gamma: float) -> float:
        """One device's Skellam variance: ``min_clients`` of them sum to ``(z c gamma)^2``,
        noise of standard deviation ``z c`` on the float sum, as central DP adds."""
        return (self.noise_multiplier * self.clip_norm * gamma) ** 2 / self.min_clients

    def _curve(self, key: tuple[float, int, int]) -> np.ndarray:
        curve = self._curves.get(key)
        if curve is None:
            gamma, dim, clients = key
            variance = clients * self.local_variance(gamma)
            curve = self._curves[key] = round_rdp(self.clip_norm, gamma, dim, self.beta, variance)
        return curve

    def epsilon(self, extra: tuple[float, int, int] | None = None) -> float:
        """Epsilon so far, or after one more round ``extra`` = (gamma, dim, noised clients)."""
        rounds = list(self.rounds.items()) + ([(extra, 1)] if extra is not None else [])
        if not rounds:
            return 0.0
        total = np.zeros_like(ORDERS)
        for key, count in rounds:  # RDP adds up over rounds
            total += count * self._curve(key)
        return epsilon_of(total, self.delta)

    def record(self, gamma: float, dim: int, clients: int) -> None:
        key = (float(gamma), int(dim), int(clients))
        self.rounds[key] = self.rounds.get(key, 0) + 1

    @property
    def rounds_released(self) -> int:
        return sum(self.rounds.values())

    def _mechanism(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "min_clients": self.min_clients,
            "beta": self.beta,
            "delta": self.delta,
        }

    def state_dict(self) -> dict[str, Any]:
        rounds = [{"gamma": g, "dim": d, "clients": s, "count": c} for (g, d, s), c in self.rounds.items()]
        return {**self._mechanism(), "rounds": rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in self._mechanism().items():
            if key in state and state[key] != mine:
                raise CheckpointError(
                    f"the checkpoint's distributed-DP ledger used {key} = {state[key]!r}, this run "
                    f"{mine!r}; resume with the checkpoint's setting, or start a fresh run"
                )
            if key not in state and state.get("rounds"):
                raise CheckpointError(
                    f"this checkpoint's distributed-DP ledger does not say its {key}; start a fresh run"
                )
        self.rounds = {
            (float(r["gamma"]), int(r["dim"]), int(r["clients"])): int(r["count"])
            for r in state.get("rounds", [])
        }
