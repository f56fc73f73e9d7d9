"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization", Alg. 1).

Each device k keeps the gradient of its local loss at its last model, ``g_k`` (client
state, zero at first), and minimizes the dynamically regularized objective

    L_k(w) - <g_k, w> + alpha/2 ||w - w_global||^2

so every local step follows ``grad L_k(w) + alpha (w - w_global) - g_k``. Afterwards the
first-order condition of that objective gives the new ``g_k``:

    g_k <- g_k - alpha (w_k - w_global)

The server keeps ``h`` (zero at first) over the m devices of the population and the
participants P of the round:

    h <- h - alpha / m * sum_{k in P} (w_k - w_global)
    w_global <- mean_{k in P} w_k - h / alpha

Here the new model is reached through the server optimizer with the pseudo-update
``mean(Delta) - h / alpha``; the default ``ServerSGD(1.0)`` is the paper's rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.client.algorithm import ClientAlgorithm, ClientOutput, GradientTerm, LocalRun, register
from shoal.client.state import ClientState
from shoal.errors import ConfigError
from shoal.messages import Failure, TrainResult, TrainTask
from shoal.strategy.aggregators import Aggregator, mean
from shoal.strategy.base import RoundContext
from shoal.strategy.fedavg import FedAvg
from shoal.transforms.base import clients_in

ALPHA = "feddyn_alpha"  # in TrainTask.config
LOCAL_GRADIENT = "feddyn_g"  # in the client's state: g_k


def _alpha(task: TrainTask) -> float:
    value = task.config.get(ALPHA, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{ALPHA} must be a number > 0, got {value!r}")
    return float(value)


def _local_gradient(task: TrainTask, state: ClientState) -> np.ndarray | None:
    g = state.get(LOCAL_GRADIENT)
    if g is not None and g.shape != task.params.shape:
        raise ValueError(
            f"this client's saved FedDyn state has {g.size} entries but the model has "
            f"{task.params.size}: the model changed under a running FedDyn job; start a fresh run"
        )
    return g


class FedDynClient(ClientAlgorithm):
    name = "feddyn"

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return ALPHA in task.config

    def gradient_term(self, task: TrainTask, state: ClientState, run: LocalRun) -> GradientTerm:
        g = _local_gradient(task, state)
        return GradientTerm(coef=_alpha(task), shift=None if g is None else -g)

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        g = _local_gradient(task, state)
        old = np.zeros(delta.shape, np.float64) if g is None else g.astype(np.float64)
        state[LOCAL_GRADIENT] = (old - _alpha(task) * delta.astype(np.float64)).astype(np.float32)
        return ClientOutput()


register(FedDynClient())


@dataclass
class FedDyn(FedAvg):
    alpha: float = 0.01  # the paper's alpha: weight of the dynamic regularizer
    aggregator: Aggregator = mean  # the paper averages participants uniformly
    h: np.ndarray | None = field(default=None, init=False, repr=False)
    _population: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha > 0:
            raise ConfigError(f"strategy.feddyn_alpha must be > 0, got {self.alpha}")
        self.client_config = {**self.client_config, ALPHA: self.alpha}

    def configure_train(
        self, ctx: RoundContext, params: np.ndarray, available: Sequence[str]
    ) -> list[TrainTask]:
        self._population = len(available)
        return super().configure_train(ctx, params, available)

    def aggregate_train(
        self,
        ctx: RoundContext,
        params: np.ndarray,
        results: Sequence[TrainResult],
        failures: Sequence[Failure],
    ) -> np.ndarray:
        kept = self.accepted(ctx, results, failures)
        total = np.zeros(params.shape, np.float64)
        for r in kept:  # a merged result (secure aggregation) is the mean of clients_in([r]) clients
            total += r.payload["delta"].astype(np.float64) * clients_in([r])
        h = np.zeros(params.shape, np.float64) if self.h is None else self.h.astype(np.float64)
        h -= self.alpha * total / max(self._population, len(kept))
        self.h = h.astype(np.float32)
        weights = np.array([r.num_examples for r in kept], dtype=np.float64)
        average = self.aggregator([r.payload["delta"] for r in kept], weights).astype(np.float64)
        return self.server_optimizer.step(params, (average - h / self.alpha).astype(np.float32))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.h is not None:
            state["h"] = self.h
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        h = state.get("h")
        self.h = None if h is None else np.asarray(h, np.float32).copy()
