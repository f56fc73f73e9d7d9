"""Send one bit a coordinate: scaled signs with error feedback (Karimireddy et al. 2019).

Each block of ``block`` coordinates travels as its signs, packed eight to a byte, and one
float32 scale, the block's mean absolute value, so the decoded block has the same L1 norm
as the block it stands for (EF-SignSGD's ``||p||_1 / d * sign(p)``, per block rather than
per vector so one large layer does not set every other layer's step). signSGD alone does
not converge in general (Karimireddy et al. give counterexamples); with error feedback,
which is on by default, it converges at SGD's rate. 32x smaller than float32, less 32 bits
a block for the scale: 31x at blocks of 1,024.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoal.errors import ConfigError
from shoal.transforms.base import TransformContext
from shoal.transforms.compress import Compressor, wrong_array

SIGNS, SCALES = "delta_sign", "delta_scale"


@dataclass
class SignCompression(Compressor):
    block: int = 1024
    error_feedback: bool = True

    name = "sign"
    keys = (SIGNS, SCALES)

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ConfigError(f"sign compression block must be >= 1, got {self.block}")

    def _blocks(self, n: int) -> int:
        return -(-n // self.block)

    def contracts(self) -> bool:
        return True

    def encode(self, delta: np.ndarray, client_id: str, ctx: TransformContext) -> dict[str, np.ndarray]:
        n = delta.shape[0]
        padded = np.zeros(self._blocks(n) * self.block, dtype=np.float64)
        padded[:n] = np.abs(delta)
        counts = np.minimum(
            self.block, n - self.block * np.arange(self._blocks(n))
        )  # the last block is short
        scales = (padded.reshape(-1, self.block).sum(axis=1) / counts).astype(np.float32)
        return {SIGNS: np.packbits(delta >= 0), SCALES: scales}

    def decode(
        self, payload: dict[str, np.ndarray], client_id: str, ctx: TransformContext
    ) -> np.ndarray | str:
        n = ctx.num_params
        signs, scales = payload[SIGNS], payload[SCALES]
        wrong = wrong_array(signs, np.uint8, (-(-n // 8),)) or wrong_array(
            scales, np.float32, (self._blocks(n),)
        )
        if wrong:
            return wrong
        if (scales < 0).any():
            return "a block's scale is negative"
        plus_minus = np.unpackbits(signs)[:n].astype(np.float32) * 2 - 1
        delta: np.ndarray = plus_minus * np.repeat(scales, self.block)[:n]
        return delta
