"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization").

Clients that run more local steps move further toward their own optimum; plain FedAvg
then optimizes a skewed objective. FedNova averages normalized updates instead:

    x <- x + tau_eff * sum_i p_i Delta_i / ||a_i||_1,    tau_eff = sum_i p_i ||a_i||_1

where ``a_i`` weighs client i's local gradients in its update. Its norm depends on the
local optimizer (Section 4 / Appendix of the paper), and the client, which knows it,
reports it (metric ``fednova_norm``):

- plain SGD, tau steps:            ||a||_1 = tau
- SGD with momentum rho:            ||a||_1 = (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho)
- with FedProx's term mu, lr eta:   ||a||_1 = (1 - (1 - eta mu)^tau) / (eta mu)

Adam, weight decay, and momentum together with a proximal term have no such closed form
here and are refused. ``p_i`` and ``tau_eff`` use the strategy's own aggregator on both
sums, so a uniform aggregator gives uniform weights in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shoal.client.algorithm import ClientAlgorithm, ClientOutput, LocalRun, register
from shoal.client.state import ClientState
from shoal.messages import Failure, FailureKind, TrainResult, TrainTask
from shoal.strategy.base import RoundContext
from shoal.strategy.fedavg import FedAvg
from shoal.strategy.fedprox import proximal_mu

NORMALIZE = "fednova"  # in TrainTask.config: report the normalizer
NORM = "fednova_norm"  # in TrainResult.metrics: ||a_i||_1


def local_norm(steps: int, lr: float, momentum: float = 0.0, mu: float = 0.0) -> float:
    """||a_i||_1 for ``steps`` local steps (Wang et al. 2020, Section 4)."""
    if momentum and mu:
        raise ValueError("FedNova has no normalization for momentum with a proximal term")
    if momentum:
        rho = momentum
        return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)
    if mu:
        shrink = 1 - lr * mu
        if not 0 < shrink < 1:
            raise ValueError(f"FedNova with FedProx needs 0 < lr * mu < 1, got {lr * mu:g}")
        return (1 - shrink**steps) / (lr * mu)
    return float(steps)


class FedNovaClient(ClientAlgorithm):
    name = "fednova"

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return bool(task.config.get(NORMALIZE, False))

    def check(self, run: LocalRun, others: Sequence[str]) -> None:
        if run.optimizer != "sgd":
            raise ValueError("FedNova's normalization is for local SGD; set trainer.optimizer = 'sgd'")
        if getattr(run.trainer, "weight_decay", 0.0):
            raise ValueError("FedNova has no normalization for weight decay; set trainer.weight_decay = 0")
        unknown = [o for o in others if o not in ("fedprox", "dp_sgd")]
        if unknown:
            raise ValueError(f"FedNova cannot normalize updates shaped by {', '.join(unknown)}")

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        norm = local_norm(run.steps, run.lr, run.momentum, proximal_mu(task))
        return ClientOutput(metrics={NORM: norm})


register(FedNovaClient())


def _norm(result: TrainResult) -> float:
    value = result.metrics.get(NORM, 0.0)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    return float(value) if ok else 0.0


@dataclass
class FedNova(FedAvg):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.client_config = {**self.client_config, NORMALIZE: True}

    def screen(
        self, ctx: RoundContext, results: Sequence[TrainResult]
    ) -> tuple[list[TrainResult], list[Failure]]:
        kept, dropped = super().screen(ctx, results)
        bad = [r for r in kept if _norm(r) <= 0]
        dropped += [
            Failure(r.round, r.client_id, FailureKind.REJECTED, f"FedNova needs a positive {NORM!r} metric")
            for r in bad
        ]
        return [r for r in kept if _norm(r) > 0], dropped

    def apply(self, params: np.ndarray, results: Sequence[TrainResult]) -> np.ndarray:
        weights = np.array([r.num_examples for r in results], dtype=np.float64)
        norms = [_norm(r) for r in results]
        # tau_eff through the same aggregator as the updates, so p_i is one weighting in both
        tau_eff = float(self.aggregator([np.array([a], np.float32) for a in norms], weights)[0])
        per_step = [r.payload["delta"] / np.float32(a) for r, a in zip(results, norms, strict=True)]
        return self.server_optimizer.step(params, np.float32(tau_eff) * self.aggregator(per_step, weights))
