"""Send updates as b-bit integers: stochastic uniform quantization (QSGD-style, unbiased).

The update is cut into blocks of ``block`` coordinates; each block is sent as its minimum
and maximum (two float32s) and, per coordinate, one of ``2^bits`` evenly spaced levels
between them, packed ``8 / bits`` to a byte. With stochastic rounding (the default) a
coordinate goes to the level above with probability equal to how far it is past the one
below, so the decoded update is unbiased: its expectation is the update (Alistarh et al.
2017 use the same rounding on a norm-scaled grid). ``stochastic=False`` rounds to the
nearest level instead (biased, lower variance). The rounding draws come from the run seed,
the round and the client, so a run reproduces.

32 / bits of the upload is saved, less 64 bits a block for the range: at 4 bits and
blocks of 1,024, 7.9x smaller than float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import Failure, FailureKind, TrainResult
from shoal.rng import Stream, seed_for
from shoal.transforms.base import TransformContext, UpdateTransform

BITS = (1, 2, 4, 8)
PACKED, LOW, HIGH = "delta_q", "delta_lo", "delta_hi"


def pack(levels: np.ndarray, bits: int) -> np.ndarray:
    """Integers in [0, 2^bits) as a packed uint8 array, most significant bit first."""
    as_bits = np.unpackbits(levels.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]
    packed: np.ndarray = np.packbits(as_bits.reshape(-1))
    return packed


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The ``count`` integers :func:`pack` made."""
    as_bits = np.unpackbits(packed)[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    levels: np.ndarray = (as_bits * weights).sum(axis=1).astype(np.uint8)
    return levels


@dataclass
class StochasticQuantization(UpdateTransform):
    bits: int = 8
    block: int = 1024
    stochastic: bool = True

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ConfigError(f"quantization bits must be one of {BITS}, got {self.bits}")
        if self.block < 1:
            raise ConfigError(f"quantization block must be >= 1, got {self.block}")

    def _blocks(self, n: int) -> int:
        return -(-n // self.block)

    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        delta = np.asarray(result.payload["delta"], dtype=np.float32)
        n = delta.shape[0]
        padded = np.zeros(self._blocks(n) * self.block, dtype=np.float64)
        padded[:n] = delta
        padded[n:] = delta[-1] if n else 0.0  # the pad takes a value the last block already holds
        blocks = padded.reshape(-1, self.block)
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        top = (1 << self.bits) - 1
        span = np.where(hi > lo, hi - lo, 1.0)
        scaled = (blocks - lo[:, None]) / span[:, None] * top
        if self.stochastic:
            rng = np.random.default_rng(
                seed_for(ctx.run_seed, ctx.round, Stream.TRANSFORM, f"q:{result.client_id}")
            )
            below = np.floor(scaled)
            levels = below + (rng.random(scaled.shape) < scaled - below)
        else:
            levels = np.rint(scaled)
        levels = np.clip(levels, 0, top).reshape(-1)[:n]
        payload = {k: v for k, v in result.payload.items() if k != "delta"}
        payload[PACKED] = pack(levels, self.bits)
        payload[LOW], payload[HIGH] = lo.astype(np.float32), hi.astype(np.float32)
        return replace(result, payload=payload)

    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        n, nb = ctx.num_params, self._blocks(ctx.num_params)
        out: list[TrainResult | Failure] = []
        for r in results:
            packed, lo, hi = r.payload.get(PACKED), r.payload.get(LOW), r.payload.get(HIGH)
            if (
                packed is None
                or lo is None
                or hi is None
                or packed.dtype != np.uint8
                or packed.shape != (-(-n * self.bits // 8),)
                or lo.shape != (nb,)
                or hi.shape != (nb,)
                or lo.dtype != np.float32
                or hi.dtype != np.float32
                or not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi >= lo).all())
            ):
                reason = f"expected a {self.bits}-bit quantized update of the model's size ({n} values)"
                out.append(Failure(r.round, r.client_id, FailureKind.REJECTED, reason))
                continue
            levels = unpack(packed, self.bits, n).astype(np.float64)
            step = np.repeat((hi.astype(np.float64) - lo) / ((1 << self.bits) - 1), self.block)[:n]
            delta = (np.repeat(lo.astype(np.float64), self.block)[:n] + levels * step).astype(np.float32)
            payload = {k: v for k, v in r.payload.items() if k not in (PACKED, LOW, HIGH)}
            payload["delta"] = delta
            out.append(replace(r, payload=payload))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
