"""Send updates as float16: half the bytes up, ~3 significant digits kept.

Values beyond float16's range (|x| > 65504) would become infinite, so the client refuses
to send them rather than corrupt the aggregate; clip first if updates can be that large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from shoal.messages import Failure, FailureKind, TrainResult
from shoal.transforms.base import TransformContext, UpdateTransform

_F16_MAX = float(np.finfo(np.float16).max)


class HalfPrecision(UpdateTransform):
    """Encode ``payload["delta"]`` as float16 on the client, decode to float32 on the server."""

    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        delta = result.payload["delta"]
        peak = float(np.abs(delta).max(initial=0.0))
        if peak > _F16_MAX:
            raise ValueError(f"update entry {peak:.3g} overflows float16; add a clipping transform first")
        payload = {k: v for k, v in result.payload.items() if k != "delta"}
        payload["delta_f16"] = delta.astype(np.float16)
        return replace(result, payload=payload)

    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        out: list[TrainResult | Failure] = []
        for r in results:
            f16 = r.payload.get("delta_f16")
            if f16 is None or f16.dtype != np.float16 or f16.shape != (ctx.num_params,):
                reason = "expected a float16 update 'delta_f16' of the model's size"
                out.append(Failure(r.round, r.client_id, FailureKind.REJECTED, reason))
                continue
            payload = {k: v for k, v in r.payload.items() if k != "delta_f16"}
            payload["delta"] = f16.astype(np.float32)
            out.append(replace(r, payload=payload))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
