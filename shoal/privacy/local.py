"""Local DP: each device clips and noises its own update before it leaves.

No one, the server included, needs to be trusted: what leaves the device is already a
Gaussian mechanism's output. The price is noise per client rather than per sum. Any two
datasets of one client give clipped updates at most 2C apart, so one round costs a
Gaussian of multiplier ``z / 2`` against that client's whole data; a client's epsilon
composes over the rounds it took part in (no amplification: it knows when it was
picked). The server half reports the worst client's epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dp_accounting
import numpy as np
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

from shoal.errors import ConfigError
from shoal.messages import Failure, Scalar, TrainResult
from shoal.privacy.clipping import clip
from shoal.privacy.noise import NoiseSource, noise_source
from shoal.rng import NoiseName
from shoal.transforms.base import TransformContext, UpdateTransform


def local_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon of one client after ``rounds`` participations (RDP, replace-one)."""
    if rounds == 0:
        return 0.0
    acc = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    acc.compose(dp_event.GaussianDpEvent(noise_multiplier / 2), rounds)
    return float(acc.get_epsilon(delta))


@dataclass
class LocalDP(UpdateTransform):
    clip_norm: float
    noise_multiplier: float  # noise std on each update: z * C
    delta: float = 1e-5
    noise: NoiseName = NoiseName.SECURE
    _participation: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _source: NoiseSource | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.noise = NoiseName(self.noise)
        if not self.clip_norm > 0 or not self.noise_multiplier > 0:
            raise ConfigError("local DP needs clip_norm > 0 and noise_multiplier > 0")

    def keeps_payload_layout(self) -> bool:
        return True

    def secret_sampling(self) -> bool:
        # amplification by sampling: who was picked must be as secret as the noise
        return self.noise is NoiseName.SECURE

    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        if self._source is None:
            self._source = noise_source(self.noise, ctx.run_seed)
        clipped, _ = clip(result.payload["delta"], self.clip_norm)
        noised = clipped + self._source.normal(
            clipped.size, self.noise_multiplier * self.clip_norm, ctx.round, result.client_id
        )
        return replace(result, payload={**result.payload, "delta": noised.astype(np.float32)})

    def begin_round(self, ctx: TransformContext, client_ids: Sequence[str]) -> None:
        """Count every selected client as having released an update: an upper bound (a client
        that fails releases nothing), and it holds when secure aggregation hides who sent what."""
        for cid in client_ids:
            self._participation[cid] = self._participation.get(cid, 0) + 1

    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        return list(results)

    def round_metrics(self) -> dict[str, Scalar]:
        worst = max(self._participation.values(), default=0)
        return {"ldp_epsilon_worst_client": local_epsilon(self.noise_multiplier, worst, self.delta)}

    def state_dict(self) -> dict[str, Any]:
        ids = sorted(self._participation)
        return {"ids": ids, "counts": [self._participation[i] for i in ids]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._participation = dict(
            zip(state.get("ids", []), (int(c) for c in state.get("counts", [])), strict=True)
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}
