"""Distributed DP inside secure aggregation: the Skellam mechanism (Agarwal, Kairouz, Liu,
NeurIPS 2021), so no one, the server included, ever sees an update without noise.

On each device, the update (``d`` floats) is

1. clipped to L2 norm ``c``;
2. rotated: padded to ``D = 2^ceil(log2 d)`` and multiplied by ``H S / sqrt(D)``
   (:mod:`.rotation`; the signs come from the round's shared seed, so the server can
   invert it) so its energy spreads over every coordinate;
3. scaled by ``gamma`` (the round's scale, fixed by the server from the cohort size so
   that ``k`` standard deviations of the sum's coordinates fit the ring) and rounded to
   integers stochastically, again until its norm is at most the bound ``D2`` the
   accounting assumes (conditional randomized rounding, Kairouz et al. 2021);
4. noised: symmetric Skellam of variance ``(z c gamma)^2 / min_clients`` per coordinate,
   so the noise of ``min_clients`` devices sums to that of central DP's ``z c``;
5. taken mod 2^R and masked by secure aggregation.

The server unmasks only the sum, reads it as signed integers, divides by ``gamma``,
rotates back and divides by the number of survivors. Skellam noise is closed under
addition, so ``s`` survivors' noise is Skellam of variance ``s`` times a device's: the
accountant (:mod:`.skellam`) composes each round with the noise of the clients that
actually survived. A sum holding the noise of fewer than ``min_clients`` is not released
(the round's results become drops and the model stays), nor is one that would take
epsilon past ``target_epsilon``.

What is claimed, and what is not:

- Neighbouring rounds differ in one client's contribution being its clipped update or
  zero, its noise present either way (the "zero-out" relation Kairouz et al. use for
  releases without sampling); a client swapping one update for another moves the sum by
  twice as much: double ``noise_multiplier`` for that relation.
- No amplification by sampling: each round is composed as released, whoever was picked.
- The noise of the survivors is in the sum only if those devices are honest; a device
  colluding with the server could reveal its own noise. The sum the server can unmask
  always holds at least the SecAgg threshold of inputs, and ``min_clients`` counts noise,
  so set it no higher than the honest clients you expect among the survivors.
- A server that lies about ``gamma`` cannot lower a device's noise-to-signal ratio (the
  noise scales with it); a smaller ``gamma`` only loosens the rounding term, which the
  server's own ledger reports, since it accounts with the ``gamma`` it sent.
- The device's own settings (``z``, ``c``, ``min_clients``) set its noise, never the
  server's messages.

Padding costs bytes: a device sends ``D`` ring entries of ``R`` bits for a model of ``d``
parameters, ``D * R / 8`` bytes (for the 1,210-parameter test MLP, ``D = 2,048``: 1.7x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import Scalar
from shoal.privacy.accounting import over_budget
from shoal.privacy.clipping import clip
from shoal.privacy.noise import NoiseSource, noise_source
from shoal.privacy.rotation import padded_size, rotate, unrotate
from shoal.privacy.skellam import SkellamLedger, rounded_l2_bound
from shoal.rng import NoiseName, Stream, generator, seed_for
from shoal.secagg.crypto import ring_mask, signed
from shoal.secagg.encoding import Ring, RingEncoder
from shoal.transforms.base import TransformContext

MAX_ROUNDING_TRIES = 1000  # each passes with probability >= 1 - beta; 1000 failures: beta^1000


@dataclass
class DistributedDP(RingEncoder):
    """The Skellam mechanism as secure aggregation's encoder (module docstring)."""

    noise_multiplier: float  # z: the sum's noise has std z * clip_norm when min_clients' noise is in it
    clip_norm: float = 1.0  # c: every update is clipped to this L2 norm on the device
    min_clients: int = 2  # a sum with fewer devices' noise is not released; the noise is split this many ways
    delta: float = 1e-5
    beta: float = math.exp(-0.5)  # conditional rounding: a try passes with probability >= 1 - beta
    k_stddevs: float = 4.0  # gamma keeps this many standard deviations of the sum inside the ring
    target_epsilon: float | None = None  # refuse, and then stop, before epsilon would exceed this
    noise: NoiseName = NoiseName.SECURE
    _ledger: SkellamLedger = field(init=False, repr=False)
    _source: NoiseSource | None = field(default=None, init=False, repr=False)
    _metrics: dict[str, Scalar] = field(default_factory=dict, init=False, repr=False)
    _spent: str | None = field(default=None, init=False, repr=False)  # why the last round was refused

    def __post_init__(self) -> None:
        self.noise = NoiseName(self.noise)
        if not self.noise_multiplier > 0:
            raise ConfigError(f"privacy.noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not self.clip_norm > 0:
            raise ConfigError(f"privacy.clip_norm must be > 0, got {self.clip_norm}")
        if self.min_clients < 1:
            raise ConfigError(f"privacy.min_clients must be >= 1, got {self.min_clients}")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"distributed DP's beta must be in [0, 1), got {self.beta}")
        if not self.k_stddevs >= 1:
            raise ConfigError(f"distributed DP's k_stddevs must be >= 1, got {self.k_stddevs}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigError(f"privacy.target_epsilon must be > 0, got {self.target_epsilon}")
        self._ledger = SkellamLedger(
            self.noise_multiplier, self.clip_norm, self.min_clients, self.beta, self.delta
        )
        self.bound = self.clip_norm  # the setup's clamp: no rotated coordinate exceeds the norm

    def dimension(self, num_params: int) -> int:
        return padded_size(num_params)

    def scale(self, num_clients: int, bits: int, num_params: int) -> float:
        """gamma with ``2^bits = 2 k sqrt(gamma^2 (c^2 n^2 / D + n sigma^2) + n / 4)``: ``k``
        standard deviations of a coordinate of the sum (updates all aligned, noise, rounding)
        inside the ring (Kairouz et al. 2021, Section 4.4; as google-research/federated's
        ``heuristic_scale_factor``)."""
        n, k, c, dim = num_clients, self.k_stddevs, self.clip_norm, self.dimension(num_params)
        if 4.0**bits <= n * k**2:
            raise ConfigError(
                f"a {bits}-bit ring cannot hold the rounding noise of {n} clients at {k:g} standard "
                "deviations; raise secagg.ring_bits or pick fewer clients a round"
            )
        local = (self.noise_multiplier * c) ** 2 / self.min_clients  # a device's noise variance, float units
        gamma = math.sqrt(4.0**bits - n * k**2) / (2 * k * math.sqrt(c**2 * n**2 / dim + n * local))
        if gamma * c < math.sqrt(dim):  # rounding would add more norm than the update has
            raise ConfigError(
                f"{n} clients in a {bits}-bit ring leave distributed DP a grid of gamma = {gamma:.3g}: "
                f"rounding {dim} coordinates would outweigh an update of norm {c:g}; raise "
                "secagg.ring_bits (16 or more is typical) or pick fewer clients a round"
            )
        return gamma

    def _rotation_seed(self, ctx: TransformContext) -> int:
        return seed_for(ctx.run_seed, ctx.round, Stream.TRANSFORM, "skellam-rotation")

    def _noise(self, ctx: TransformContext) -> NoiseSource:
        if self._source is None:
            self._source = noise_source(self.noise, ctx.run_seed)
        return self._source

    # -- on the device ---------------------------------------------------------------------
    def encode(self, update: np.ndarray, ring: Ring, ctx: TransformContext, client_id: str) -> np.ndarray:
        gamma = ring.scale
        clipped, _ = clip(update, self.clip_norm)
        scaled = rotate(clipped, self._rotation_seed(ctx)) * gamma  # (D,)
        rounded = self.round_to_integers(
            scaled, gamma, generator(ctx.run_seed, ctx.round, Stream.TRANSFORM, f"skellam:{client_id}")
        )
        noise = self._noise(ctx).skellam(
            scaled.shape[0], self._ledger.local_variance(gamma), ctx.round, client_id
        )
        encoded: np.ndarray = ((rounded + noise) & int(ring_mask(ring.bits))).astype(np.uint32)
        return encoded

    def round_to_integers(self, scaled: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
        """Conditional randomized rounding: stochastic rounding, redrawn until the norm is
        within the bound the accounting uses (int64)."""
        limit = rounded_l2_bound(self.clip_norm * gamma, scaled.shape[0], self.beta)
        below = np.floor(scaled)
        for _ in range(MAX_ROUNDING_TRIES):
            rounded = below + (rng.random(scaled.shape) < scaled - below)
            if np.linalg.norm(rounded) <= limit:
                integers: np.ndarray = rounded.astype(np.int64)
                return integers
        raise RuntimeError("conditional rounding failed every try; the update was not clipped")

    # -- on the server ---------------------------------------------------------------------
    def refusal(self, count: int, ring: Ring, ctx: TransformContext) -> str | None:
        self._metrics = {"dp_epsilon": self._ledger.epsilon()}  # until a release says more
        if count < self.min_clients:
            return (
                f"distributed DP: {count} clients' noise is in the sum, below privacy.min_clients = "
                f"{self.min_clients} the accountant assumes; the sum is not released"
            )
        if self.target_epsilon is not None:
            after = self._ledger.epsilon(extra=(ring.scale, self.dimension(ctx.num_params), count))
            if after > self.target_epsilon:
                self._spent = (
                    f"privacy budget: releasing round {ctx.round} would bring epsilon to {after:.3f} > "
                    f"target {self.target_epsilon:g} (delta {self.delta:g}) after "
                    f"{self._ledger.rounds_released} rounds"
                )
                return self._spent
        return None

    def decode(self, total: np.ndarray, count: int, ring: Ring, ctx: TransformContext) -> np.ndarray:
        dim = self.dimension(ctx.num_params)
        self._ledger.record(ring.scale, dim, count)  # the release below is what costs privacy
        summed = signed(total, ring.bits).astype(np.float64) / ring.scale
        mean = unrotate(summed, self._rotation_seed(ctx), ctx.num_params) / count
        self._metrics = {"dp_epsilon": self._ledger.epsilon(), "dp_noised_clients": count}
        return mean.astype(np.float32)

    @property
    def epsilon(self) -> float:
        return self._ledger.epsilon()

    def planned_epsilon(self, rounds: int, cohort: int, bits: int, num_params: int) -> float:
        """Epsilon after ``rounds`` rounds of ``cohort`` clients in a ``bits``-bit ring, each
        sum holding only ``min_clients``' noise (the least one released can): for planning."""
        ledger = SkellamLedger(self.noise_multiplier, self.clip_norm, self.min_clients, self.beta, self.delta)
        ledger.rounds = {
            (self.scale(cohort, bits, num_params), self.dimension(num_params), self.min_clients): rounds
        }
        return ledger.epsilon()

    def round_metrics(self) -> dict[str, Scalar]:
        return dict(self._metrics)

    def stop_reason(self, ctx: TransformContext, bits: int) -> str | None:
        """Before each round: stop when the last release was refused for the budget, or when
        a round of the expected cohort with only ``min_clients``' noise would pass it."""
        if self._spent is not None or self.target_epsilon is None:
            return self._spent
        expected = math.ceil(ctx.sampling.expected_size) if ctx.sampling is not None else self.min_clients
        n = max(expected, self.min_clients, 2)
        extra = (self.scale(n, bits, ctx.num_params), self.dimension(ctx.num_params), self.min_clients)
        after = self._ledger.epsilon(extra=extra)
        return over_budget(after, self.target_epsilon, self.delta, self._ledger.rounds_released)

    def state_dict(self) -> dict[str, Any]:
        return {"ledger": self._ledger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ledger.load_state_dict(state.get("ledger", {}))

    def __getstate__(self) -> dict[str, Any]:  # a cipher does not pickle; each process makes its own
        return {**self.__dict__, "_source": None}
