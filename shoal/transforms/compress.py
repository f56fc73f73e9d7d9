"""Compressors of the uplink: one base class, so each codec is only its encode and decode.

A :class:`Compressor` turns a client's float32 ``delta`` into the few arrays that travel
(packed bits, indices, factors) and the server turns each back into a float32 vector of
the model's size before anything else reads it. A decoder treats the payload as an
attacker's: wrong keys, dtypes or lengths, indices out of range or repeated, values that
are not finite: any of these costs that client its own update (a :class:`Failure`), never
the round.

Error feedback (Seide et al. 2014; Karimireddy et al. 2019, "EF-SignSGD"; Stich et al.
2018) is the same for every codec, so it lives here: the device compresses ``delta +
residual``, decodes what it sent exactly as the server will, and keeps the difference as
its new residual, in the client state (:mod:`shoal.client.state`). The runtime keeps that
state only when the server counted the result, saves it in checkpoints and, on a real
device, in ``--state-file``: it survives a resume and a restart of the network client.
What the server never received comes back in a later round, so a biased codec (top-k,
sign, low rank) still converges.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import Failure, FailureKind, TrainResult
from shoal.transforms.base import TransformContext, UpdateTransform

RESIDUAL_PREFIX = "ef_residual:"  # client-state key of a codec's error-feedback residual


class Compressor(UpdateTransform):
    """Base of the uplink codecs: subclasses give ``name``, :meth:`encode`, :meth:`decode`.

    ``error_feedback`` is a plain attribute (each subclass declares it as a dataclass field
    with its own default: on for the biased codecs, off for the unbiased ones)."""

    name: ClassVar[str] = ""
    keys: tuple[str, ...] = ()  # the payload keys encode writes (sparse codecs set theirs on init)
    error_feedback: bool = False

    @abc.abstractmethod
    def encode(self, delta: np.ndarray, client_id: str, ctx: TransformContext) -> dict[str, np.ndarray]:
        """The arrays that travel in place of ``delta`` (a float32 vector)."""

    @abc.abstractmethod
    def decode(
        self, payload: dict[str, np.ndarray], client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        """``delta`` back as float32 of the model's size, or why the payload is refused."""

    def contracts(self) -> bool:
        """True when what a codec loses is never larger than what it was given,
        ``||x - C(x)|| <= ||x||`` (top-k, scaled signs, a projection onto a low-rank subspace,
        float16). Error feedback is sound only then: the residual of an unbiased codec
        (a random mask scaled by n/k, stochastic rounding) can exceed the update itself,
        and fed back round after round it can grow without bound (top-1% with 1-bit
        stochastic values and error feedback diverged in bench/compression.py)."""
        return False

    def _check_feedback(self) -> None:
        if self.error_feedback and not self.contracts():
            raise ConfigError(
                f"{self.label} is not a contraction (what it loses can exceed the update), so error "
                "feedback could grow its residual without bound: set error_feedback = false, or use a "
                "codec that contracts (top-k with float32, half or sign values; sign; powersgd)"
            )

    @property
    def label(self) -> str:
        """What the update is, in an error message ("a 4-bit quantized update")."""
        return self.name

    # -- the device ----------------------------------------------------------------------
    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        delta = np.asarray(result.payload["delta"], dtype=np.float32)
        if self.error_feedback:
            delta = self._add_residual(delta, ctx)
        sent = self.encode(delta, result.client_id, ctx)
        if self.error_feedback:
            assert ctx.state is not None  # _add_residual refused otherwise
            seen = self.decode(sent, result.client_id, ctx)
            if isinstance(seen, str):  # our own encoding must decode; anything else is a bug
                raise RuntimeError(f"{self.name} could not decode its own update: {seen}")
            ctx.state[RESIDUAL_PREFIX + self.name] = delta - seen
        payload = {k: v for k, v in result.payload.items() if k != "delta"}
        payload.update(sent)
        return replace(result, payload=payload)

    def _add_residual(self, delta: np.ndarray, ctx: TransformContext) -> np.ndarray:
        if ctx.state is None:
            raise ValueError(
                f"{self.name} with error feedback keeps a residual in the client's state, none given"
            )
        residual = ctx.state.get(RESIDUAL_PREFIX + self.name)
        if residual is None or residual.shape != delta.shape or residual.dtype != np.float32:
            return delta  # the first round (or a new model): nothing carried over
        out: np.ndarray = delta + residual
        return out

    # -- the server ----------------------------------------------------------------------
    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        out: list[TrainResult | Failure] = []
        for r in results:
            sent = {k: r.payload[k] for k in self.keys if k in r.payload}
            delta = self.decode(sent, r.client_id, ctx) if len(sent) == len(self.keys) else "keys missing"
            if isinstance(delta, str):
                reason = (
                    f"expected a {self.label} update of the model's size ({ctx.num_params} values): {delta}"
                )
                out.append(Failure(r.round, r.client_id, FailureKind.REJECTED, reason))
                continue
            payload = {k: v for k, v in r.payload.items() if k not in self.keys}
            payload["delta"] = delta
            out.append(replace(r, payload=payload))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}  # residuals live in each client's state, not here

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def wrong_array(value: np.ndarray | None, dtype: type, shape: tuple[int, ...]) -> str | None:
    """Why ``value`` is not a finite array of this dtype and shape (None: it is)."""
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) or value.shape != shape:
        got = "nothing" if value is None else f"{getattr(value, 'dtype', '?')}{getattr(value, 'shape', '')}"
        return f"expected {np.dtype(dtype)}{shape}, got {got}"
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        return "values are not finite"
    return None


def pack_bits(levels: np.ndarray, bits: int) -> np.ndarray:
    """Integers in [0, 2^bits) as a packed uint8 array, most significant bit first."""
    as_bits = np.unpackbits(levels.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]
    packed: np.ndarray = np.packbits(as_bits.reshape(-1))
    return packed


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The ``count`` integers :func:`pack_bits` made."""
    as_bits = np.unpackbits(packed)[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    levels: np.ndarray = (as_bits * weights).sum(axis=1).astype(np.uint8)
    return levels


def packed_bytes(count: int, bits: int) -> int:
    return -(-count * bits // 8)
