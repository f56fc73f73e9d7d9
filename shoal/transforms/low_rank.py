"""Send large layers as two thin factors: PowerSGD-style low-rank updates (Vogels et al. 2019).

Each weight tensor of two or more dimensions is viewed as a matrix ``M`` (rows = its first
dimension, columns = the rest: a conv kernel [out, in, kh, kw] is out x in*kh*kw) and sent
as ``P`` (rows x r) and ``Q`` (columns x r) with ``M ~ P Q^T``, found by one step of power
iteration: ``P = orth(M Q0)``, ``Q = M^T P``. ``Q0`` is the device's ``Q`` from the last
round it took part in (kept in its client state; the paper's warm start, which makes one
iteration per round track the top subspace over time), or, the first time, a Gaussian draw
from the run seed and round. Tensors where the factors would not be smaller (biases, small
layers) travel dense as float32.

Low rank is biased, so error feedback is on by default (as in the paper). A layer of
1,024 x 1,024 at rank 4 is 128x smaller; the whole model's ratio depends on how much of it
sits in biases and small layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from shoal.errors import ConfigError
from shoal.rng import Stream, seed_for
from shoal.transforms.base import TransformContext
from shoal.transforms.compress import Compressor, wrong_array

FACTORS, DENSE = "delta_pq", "delta_dense"
WARM_START = "powersgd_q"  # client-state key: the Qs of the last round, concatenated


class _Tensor(NamedTuple):
    offset: int
    rows: int
    cols: int
    rank: int  # 0: sent dense


@dataclass
class PowerSGD(Compressor):
    rank: int = 4
    shapes: tuple[tuple[int, ...], ...] = ()  # the model's tensor shapes, in order
    error_feedback: bool = True

    name = "powersgd"
    keys = (FACTORS, DENSE)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"powersgd rank must be >= 1, got {self.rank}")
        self.shapes = tuple(tuple(int(d) for d in s) for s in self.shapes)
        self._layout: list[_Tensor] = []
        offset = 0
        for shape in self.shapes:
            size = int(np.prod(shape, dtype=np.int64))
            rows, cols = (shape[0], size // shape[0]) if len(shape) >= 2 and shape[0] else (size, 1)
            r = min(self.rank, rows, cols)
            low = len(shape) >= 2 and r * (rows + cols) < rows * cols
            self._layout.append(_Tensor(offset, rows, cols, r if low else 0))
            offset += size
        self._size = offset
        self._factors = sum(t.rank * (t.rows + t.cols) for t in self._layout)
        self._dense = sum(t.rows * t.cols for t in self._layout if not t.rank)

    @property
    def label(self) -> str:
        return f"rank-{self.rank} powersgd"

    def _check_size(self, n: int) -> None:
        if not self.shapes:
            raise ValueError("powersgd needs the model's tensor shapes (PowerSGD(rank, shapes=spec.shapes))")
        if n != self._size:
            raise ValueError(f"powersgd was built for a model of {self._size} values, the update has {n}")

    def contracts(self) -> bool:
        return True

    def encode(self, delta: np.ndarray, client_id: str, ctx: TransformContext) -> dict[str, np.ndarray]:
        self._check_size(delta.shape[0])
        warm = None if ctx.state is None else ctx.state.get(WARM_START)
        if warm is not None and warm.shape != (sum(t.rank * t.cols for t in self._layout),):
            warm = None  # a different model or rank: start afresh
        factors, dense, qs, at = [], [], [], 0
        for i, t in enumerate(self._layout):
            m = delta[t.offset : t.offset + t.rows * t.cols].astype(np.float64)
            if not t.rank:
                dense.append(m)
                continue
            m = m.reshape(t.rows, t.cols)
            if warm is not None:
                q0 = warm[at : at + t.cols * t.rank].reshape(t.cols, t.rank).astype(np.float64)
            else:
                rng = np.random.default_rng(
                    seed_for(ctx.run_seed, ctx.round, Stream.TRANSFORM, f"powersgd:{i}")
                )
                q0 = rng.standard_normal((t.cols, t.rank))
            at += t.cols * t.rank
            p, _ = np.linalg.qr(m @ q0)  # rows x r, orthonormal columns
            q = m.T @ p  # cols x r
            factors += [p.reshape(-1), q.reshape(-1)]
            qs.append(q.reshape(-1))
        if ctx.state is not None and qs:
            ctx.state[WARM_START] = np.concatenate(qs).astype(np.float32)
        return {
            FACTORS: np.concatenate([np.zeros(0), *factors]).astype(np.float32),
            DENSE: np.concatenate([np.zeros(0), *dense]).astype(np.float32),
        }

    def decode(
        self, payload: dict[str, np.ndarray], client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        if ctx.num_params != self._size:
            return f"powersgd was built for a model of {self._size} values"
        pq, dense = payload[FACTORS], payload[DENSE]
        wrong = wrong_array(pq, np.float32, (self._factors,)) or wrong_array(
            dense, np.float32, (self._dense,)
        )
        if wrong:
            return wrong
        delta = np.empty(self._size, dtype=np.float32)
        at_pq = at_dense = 0
        for t in self._layout:
            size = t.rows * t.cols
            if not t.rank:
                delta[t.offset : t.offset + size] = dense[at_dense : at_dense + size]
                at_dense += size
                continue
            p = pq[at_pq : at_pq + t.rows * t.rank].reshape(t.rows, t.rank)
            q = pq[at_pq + t.rows * t.rank : at_pq + t.rank * (t.rows + t.cols)].reshape(t.cols, t.rank)
            at_pq += t.rank * (t.rows + t.cols)
            delta[t.offset : t.offset + size] = (p @ q.T).reshape(-1)
        return delta
