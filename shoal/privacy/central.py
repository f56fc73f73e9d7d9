"""Central DP-FedAvg (McMahan et al. 2018) with fixed or adaptive clipping (Andrew et al. 2021).

The server, trusted with individual updates, clips each to L2 norm C, sums them, adds
Gaussian noise of standard deviation ``z * C`` to the sum and divides by the *expected*
cohort size (qN under Poisson sampling, m under fixed-size): DP-FedAvg's fixed-denominator
estimator, where every client weighs the same so one client's influence is bounded by C.
The cohort becomes one result (its ``aggregated_clients`` metric counts the clients), which
the strategy's server optimizer then applies like any average.

Adaptive clipping tracks a quantile of the update norms instead of a fixed C: with
``b_i = 1[||Delta_i|| <= C]``, the server releases the noised count
``b = (sum(b_i - 1/2) + N(0, sigma_b^2)) / E[m] + 1/2`` and sets
``C <- C exp(-eta_C (b - gamma))`` (geometric update toward quantile gamma). The count is a
second Gaussian query of sensitivity 1/2, so the update's noise multiplier becomes
``z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2`` and the pair costs exactly one Gaussian of
multiplier z: what the accountant composes (Andrew et al., Theorem 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.config.names import AccountantName
from shoal.errors import ConfigError
from shoal.messages import Failure, FailureKind, Scalar, TrainResult
from shoal.privacy.accounting import PrivacyLedger, over_budget
from shoal.privacy.clipping import clip
from shoal.privacy.noise import NoiseSource, noise_source
from shoal.rng import NoiseName
from shoal.transforms.base import TransformContext, UpdateTransform, merged_result


@dataclass
class CentralDP(UpdateTransform):
    """Clip, sum, noise on the server; epsilon composed every round."""

    noise_multiplier: float  # z: noise std on the sum is z * C
    clip_norm: float = 1.0  # C, or its starting value when adaptive
    delta: float = 1e-5
    adaptive: bool = False
    target_quantile: float = 0.5  # gamma: adaptive C tracks this quantile of update norms
    clip_lr: float = 0.2  # eta_C
    clip_count_stddev: float | None = None  # sigma_b; None: E[m] / 20, as in Andrew et al.
    target_epsilon: float | None = None  # stop the run before epsilon would exceed this
    accountant: AccountantName = AccountantName.RDP
    noise: NoiseName = NoiseName.SECURE
    _ledger: PrivacyLedger = field(init=False, repr=False)
    _source: NoiseSource | None = field(default=None, init=False, repr=False)
    _metrics: dict[str, Scalar] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.accountant, self.noise = AccountantName(self.accountant), NoiseName(self.noise)
        if not self.noise_multiplier > 0:
            raise ConfigError(f"privacy.noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not self.clip_norm > 0:
            raise ConfigError(f"privacy.clip_norm must be > 0, got {self.clip_norm}")
        if not 0.0 < self.target_quantile < 1.0:
            raise ConfigError(f"privacy.target_quantile must be in (0, 1), got {self.target_quantile}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigError(f"privacy.target_epsilon must be > 0, got {self.target_epsilon}")
        self._ledger = PrivacyLedger(self.noise_multiplier, self.delta, self.accountant)

    # -- the device does nothing: the trusted server clips ---------------------------------
    def keeps_payload_layout(self) -> bool:
        return True

    def secret_sampling(self) -> bool:
        # amplification by sampling: who was picked must be as secret as the noise
        return self.noise is NoiseName.SECURE

    def client_apply(self, result: TrainResult, ctx: TransformContext) -> TrainResult:
        return result

    def _count_stddev(self, expected: float) -> float:
        return self.clip_count_stddev if self.clip_count_stddev is not None else expected / 20.0

    def update_noise_multiplier(self, expected: float) -> float:
        """z for the update: z itself, or z_delta when the clip count takes its share."""
        if not self.adaptive:
            return self.noise_multiplier
        sigma_b = self._count_stddev(expected)
        rest = self.noise_multiplier**-2 - (2.0 * sigma_b) ** -2
        if rest <= 0:
            raise ConfigError(
                f"adaptive clipping: the clip count noise (clip_count_stddev {sigma_b:.3g}) needs "
                f"2 * clip_count_stddev > noise_multiplier ({self.noise_multiplier}); raise it, or "
                "sample more clients a round"
            )
        return float(rest**-0.5)

    def server_apply(
        self, results: Sequence[TrainResult], ctx: TransformContext
    ) -> list[TrainResult | Failure]:
        sampling = ctx.sampling
        if sampling is None:
            raise ConfigError("central DP needs a strategy that states its client sampling (sampling_for)")
        self._ledger.record(sampling)  # the release below is what costs privacy
        out: list[TrainResult | Failure] = []
        kept: list[TrainResult] = []
        for r in results:
            delta = r.payload.get("delta")
            if delta is None or delta.shape != (ctx.num_params,) or not np.isfinite(delta).all():
                out.append(
                    Failure(
                        r.round, r.client_id, FailureKind.REJECTED, "no finite update of the model's size"
                    )
                )
            else:
                kept.append(r)
        bound, expected = self.clip_norm, sampling.expected_size
        total = np.zeros(ctx.num_params, np.float64)
        below = 0
        for r in kept:
            clipped, norm = clip(r.payload["delta"], bound)
            total += clipped
            below += norm <= bound
        source = self._noise(ctx)
        z = self.update_noise_multiplier(expected)
        total += source.normal(ctx.num_params, z * bound, ctx.round)
        mean = (total / expected).astype(np.float32)
        self._metrics = {"dp_epsilon": self._ledger.epsilon(), "dp_clip_norm": bound}
        if self.adaptive:
            count_noise = source.normal(1, self._count_stddev(expected), ctx.round, "clip-count")
            noisy = below - len(kept) / 2 + float(count_noise[0])
            fraction = noisy / expected + 0.5
            self.clip_norm = bound * math.exp(-self.clip_lr * (fraction - self.target_quantile))
            self._metrics["dp_unclipped_fraction"] = fraction  # noised: safe to release
        return [merged_result(ctx.round, "dp-aggregate", kept, mean), *out]

    def _noise(self, ctx: TransformContext) -> NoiseSource:
        if self._source is None:
            self._source = noise_source(self.noise, ctx.run_seed)
        return self._source

    def round_metrics(self) -> dict[str, Scalar]:
        return dict(self._metrics)

    @property
    def epsilon(self) -> float:
        return self._ledger.epsilon()

    def stop_reason(self, ctx: TransformContext) -> str | None:
        """Called before every round: a misconfiguration fails here, before any client trains."""
        if ctx.sampling is None:
            raise ConfigError("central DP needs a strategy that states its client sampling (sampling_for)")
        self.update_noise_multiplier(ctx.sampling.expected_size)
        if self.target_epsilon is None:
            return None
        after = self._ledger.epsilon(extra=ctx.sampling)
        return over_budget(after, self.target_epsilon, self.delta, self._ledger.rounds_released)

    def state_dict(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm, "ledger": self._ledger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip_norm = float(state.get("clip_norm", self.clip_norm))
        self._ledger.load_state_dict(state.get("ledger", {}))

    def __getstate__(self) -> dict[str, Any]:  # a cipher does not pickle; each process makes its own
        return {**self.__dict__, "_source": None}
