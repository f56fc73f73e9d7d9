"""Send updates as float16: half the bytes up, ~3 significant digits kept.

Values beyond float16's range (|x| > 65504) would become infinite, so the client refuses
to send them rather than corrupt the aggregate; clip first if updates can be that large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoal.transforms.base import TransformContext
from shoal.transforms.compress import Compressor, wrong_array

_F16_MAX = float(np.finfo(np.float16).max)
F16 = "delta_f16"


@dataclass
class HalfPrecision(Compressor):
    """Encode ``payload["delta"]`` as float16 on the client, decode to float32 on the server."""

    error_feedback: bool = False

    name = "half-precision"
    keys = (F16,)

    def contracts(self) -> bool:
        return True

    def encode(self, delta: np.ndarray, client_id: str, ctx: TransformContext) -> dict[str, np.ndarray]:
        peak = float(np.abs(delta).max(initial=0.0))
        if peak > _F16_MAX:
            raise ValueError(f"update entry {peak:.3g} overflows float16; add a clipping transform first")
        return {F16: delta.astype(np.float16)}

    def decode(
        self, payload: dict[str, np.ndarray], client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        wrong = wrong_array(payload[F16], np.float16, (ctx.num_params,))
        if wrong:
            return wrong
        delta: np.ndarray = payload[F16].astype(np.float32)
        return delta
