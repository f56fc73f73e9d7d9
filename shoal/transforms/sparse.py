"""Send a few coordinates: top-k with error feedback, or a random mask drawn from a seed.

**Top-k** (Aji & Heafield 2017; Lin et al. 2018, Deep Gradient Compression) sends the
``k = ceil(keep_fraction * n)`` largest-magnitude coordinates as increasing uint32 indices and
their float32 values: 8 bytes a kept coordinate, so 1% is 50x smaller than float32 and
0.1% is 500x. It is biased (small coordinates are never sent), so error feedback is on by
default: what was left out accumulates on the device and goes out once it is large.

**Random mask** (Konecny et al. 2016, "structured updates") sends ``k`` coordinates chosen
by a generator seeded from the run, the round and the client, so the server draws the same
mask and only the values travel: 4 bytes a kept coordinate, ``1 / fraction`` smaller. The
values are scaled by ``n / k``, so the decoded update is unbiased (and its variance grows
as the fraction shrinks).

Either may send its kept values through a second codec (``values``): float16, stochastic
quantization (unbiased; with a 10% mask at 1 bit, 263x smaller in bench/compression.py at
no loss) or scaled signs (a contraction, so top-k keeps its error feedback).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from shoal.errors import ConfigError
from shoal.rng import Stream, seed_for
from shoal.transforms.base import TransformContext
from shoal.transforms.compress import Compressor, wrong_array
from shoal.transforms.half_precision import HalfPrecision
from shoal.transforms.quantize import StochasticQuantization
from shoal.transforms.sign import SignCompression

INDICES, VALUES = "delta_idx", "delta_val"
_VALUE = "val_"  # prefix of the kept values' arrays when a codec encodes them
MAX_FRACTION = 0.5  # beyond it indices and values outweigh the dense float32 vector


def kept(fraction: float, n: int) -> int:
    return min(n, max(1, math.ceil(fraction * n)))


def _check_fraction(name: str, fraction: float) -> None:
    if not 0 < fraction <= MAX_FRACTION:
        raise ConfigError(
            f"{name} keep_fraction must be in (0, {MAX_FRACTION}], got {fraction}: above half, "
            "the indices and values take more bytes than the dense update"
        )


class _Sparse(Compressor):
    """What top-k and the random mask share: ``values``, an optional codec for the kept
    values (float16, quantized or signs: the bytes a kept value costs drop from 4 to as few
    as 1/8). Top-k keeps error feedback only with a codec that contracts (half, sign)."""

    keep_fraction: float
    values: Compressor | None

    def _init_keys(self, head: tuple[str, ...]) -> None:
        _check_fraction(self.name, self.keep_fraction)
        codecs = (HalfPrecision, StochasticQuantization, SignCompression)
        if self.values is not None and not isinstance(self.values, codecs):
            raise ConfigError(
                f"{self.name} values travel as float32, half, quantize or sign, not {self.values.name}"
            )
        inner = (VALUES,) if self.values is None else tuple(_VALUE + k for k in self.values.keys)
        self.keys = (*head, *inner)
        self._check_feedback()

    def _values_ctx(self, k: int, ctx: TransformContext) -> TransformContext:
        return dataclasses.replace(ctx, num_params=k, state=None)

    def _send_values(
        self, values: np.ndarray, client_id: str, ctx: TransformContext
    ) -> dict[str, np.ndarray]:
        if self.values is None:
            return {VALUES: values.astype(np.float32)}
        sent = self.values.encode(values.astype(np.float32), client_id, self._values_ctx(len(values), ctx))
        return {_VALUE + key: array for key, array in sent.items()}

    def _read_values(
        self, payload: dict[str, np.ndarray], k: int, client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        if self.values is None:
            return wrong_array(payload[VALUES], np.float32, (k,)) or payload[VALUES]
        inner = {key[len(_VALUE) :]: array for key, array in payload.items() if key.startswith(_VALUE)}
        return self.values.decode(inner, client_id, self._values_ctx(k, ctx))


@dataclass
class TopK(_Sparse):
    keep_fraction: float = 0.01
    error_feedback: bool = True
    values: Compressor | None = None

    name = "top-k"

    def __post_init__(self) -> None:
        self._init_keys((INDICES,))

    def contracts(self) -> bool:  # it keeps the largest values (a random mask scales by n / k: not)
        return self.values is None or self.values.contracts()

    @property
    def label(self) -> str:
        return f"top-{self.keep_fraction:.3g} sparse"

    def encode(self, delta: np.ndarray, client_id: str, ctx: TransformContext) -> dict[str, np.ndarray]:
        k = kept(self.keep_fraction, delta.shape[0])
        top = np.argpartition(np.abs(delta), delta.shape[0] - k)[-k:]  # O(n), unordered
        top.sort()
        return {INDICES: top.astype(np.uint32), **self._send_values(delta[top], client_id, ctx)}

    def decode(
        self, payload: dict[str, np.ndarray], client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        n = ctx.num_params
        k = kept(self.keep_fraction, n)
        idx = payload[INDICES]
        wrong = wrong_array(idx, np.uint32, (k,))
        if wrong:
            return wrong
        # increasing and in range: no coordinate twice, none past the model
        if k and (int(idx[-1]) >= n or (k > 1 and not (np.diff(idx.astype(np.int64)) > 0).all())):
            return "indices must increase and stay below the model's size"
        values = self._read_values(payload, k, client_id, ctx)
        if isinstance(values, str):
            return values
        delta = np.zeros(n, dtype=np.float32)
        delta[idx] = values
        return delta


def random_mask(fraction: float, n: int, client_id: str, ctx: TransformContext) -> np.ndarray:
    """The ``k`` coordinates a client sends this round, increasing; the server draws the same."""
    rng = np.random.default_rng(seed_for(ctx.run_seed, ctx.round, Stream.TRANSFORM, f"mask:{client_id}"))
    chosen = rng.choice(n, size=kept(fraction, n), replace=False)
    chosen.sort()
    return chosen


@dataclass
class RandomMask(_Sparse):
    keep_fraction: float = 0.1
    error_feedback: bool = False  # unbiased as it is
    values: Compressor | None = None

    name = "random-mask"

    def __post_init__(self) -> None:
        self._init_keys(())

    def encode(self, delta: np.ndarray, client_id: str, ctx: TransformContext) -> dict[str, np.ndarray]:
        n = delta.shape[0]
        mask = random_mask(self.keep_fraction, n, client_id, ctx)
        return self._send_values(delta[mask] * np.float32(n / mask.shape[0]), client_id, ctx)

    def decode(
        self, payload: dict[str, np.ndarray], client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        n = ctx.num_params
        mask = random_mask(self.keep_fraction, n, client_id, ctx)
        values = self._read_values(payload, mask.shape[0], client_id, ctx)
        if isinstance(values, str):
            return values
        delta = np.zeros(n, dtype=np.float32)
        delta[mask] = values
        return delta
