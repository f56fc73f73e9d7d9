"""How a float update becomes ring elements on the device, and a ring sum a float mean on
the server: the one thing secure aggregation needs to know about what it sums.

:class:`RingEncoder` is that pair of halves. The round's ring (``R`` bits) and scale are
fixed by the server when the round starts (:meth:`RingEncoder.scale`, sent in the setup
message); the device encodes with them, masks, and packs ``R`` bits an entry; the server
unmasks the sum mod 2^R and hands it back to the encoder. Two encoders ship:

- :class:`FixedPoint` (the default): clamp to ``[-bound, bound]``, scale, round. At 32
  bits it rounds to nearest (bit for bit what SecAgg always did); in a narrower ring it
  rounds stochastically, because the grid is then coarse enough for round-to-nearest to
  bias the mean: with 8 clients at bound 1 in 12 bits the step is 2^-8, and every
  coordinate of an update below half a step would round to zero on every client, round
  after round. Stochastic rounding is unbiased (``E[decode(encode(x))] = x``), and its
  variance, at most ``step^2 / 4`` per client, averages down over the cohort.
- :class:`shoal.privacy.distributed.DistributedDP`: clip, rotate, scale, round and add
  Skellam noise on the device, so the server's sum is already differentially private.

Hooks a DP encoder needs (whether a sum may be released, metrics, a stop reason, state)
have no-op defaults, so :class:`~shoal.secagg.transform.SecureAggregation` calls them
directly.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import Scalar
from shoal.rng import Stream, seed_for
from shoal.secagg.crypto import RING_BITS, decode, encode, fixed_point_scale
from shoal.transforms.base import TransformContext


@dataclass(frozen=True)
class Ring:
    """One round's ring as the setup message fixes it."""

    bits: int  # inputs and their sum live in Z_2^bits
    scale: float  # ring units per float unit (the fixed-point scale, or DP's gamma)


class RingEncoder(abc.ABC):
    """Float update <-> ring elements, in a ring of ``bits`` the transform chooses."""

    bound: float  # what the setup message carries as the clamp on float entries

    def dimension(self, num_params: int) -> int:
        """Ring entries per input (more than ``num_params`` when the encoder pads)."""
        return num_params

    @abc.abstractmethod
    def scale(self, num_clients: int, bits: int, num_params: int) -> float:
        """The round's scale for a cohort of ``num_clients``; ConfigError when a ring of
        ``bits`` is too narrow for them, naming the fix."""

    @abc.abstractmethod
    def encode(self, update: np.ndarray, ring: Ring, ctx: TransformContext, client_id: str) -> np.ndarray:
        """On the device: ``(num_params,)`` float update -> ``(dimension,)`` uint32 below 2^bits."""

    @abc.abstractmethod
    def decode(self, total: np.ndarray, count: int, ring: Ring, ctx: TransformContext) -> np.ndarray:
        """On the server: the ring sum of ``count`` inputs -> their ``(num_params,)`` float32 mean."""

    def refusal(self, count: int, ring: Ring, ctx: TransformContext) -> str | None:
        """Why the sum of ``count`` inputs must not be released (None: it may); asked
        before it is decoded."""
        return None

    def round_metrics(self) -> dict[str, Scalar]:
        return {}

    def stop_reason(self, ctx: TransformContext, bits: int) -> str | None:
        """Why round ``ctx.round`` must not run in a ring of ``bits`` (None: it may)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class FixedPoint(RingEncoder):
    """Clamp each coordinate to ``[-bound, bound]`` and put it on a power-of-two grid."""

    bound: float = 1.0
    stochastic: bool = False  # unbiased stochastic rounding (see the module docstring)

    def __post_init__(self) -> None:
        if not self.bound > 0:
            raise ConfigError(f"secure aggregation bound must be > 0, got {self.bound}")

    def scale(self, num_clients: int, bits: int, num_params: int) -> float:
        try:
            scale = fixed_point_scale(num_clients, self.bound, bits)
        except ValueError:
            scale = 0.0
        if self.bound * scale < 1:  # fewer than 3 levels (-1, 0, 1 steps) per client and coordinate
            need = math.ceil(math.log2(num_clients + 1)) + 2
            raise ConfigError(
                f"{num_clients} clients in a {bits}-bit ring leave each client fewer than 3 fixed-point "
                f"levels a coordinate; raise secagg.ring_bits to {min(need, RING_BITS)} or more, or pick "
                "fewer clients a round"
            )
        return scale

    def encode(self, update: np.ndarray, ring: Ring, ctx: TransformContext, client_id: str) -> np.ndarray:
        rng = None
        if self.stochastic:
            rng = np.random.default_rng(
                seed_for(ctx.run_seed, ctx.round, Stream.TRANSFORM, f"ring:{client_id}")
            )
        return encode(update, self.bound, ring.scale, ring.bits, rng)

    def decode(self, total: np.ndarray, count: int, ring: Ring, ctx: TransformContext) -> np.ndarray:
        mean: np.ndarray = decode(total, ring.scale, ring.bits) / np.float32(count)
        return mean
