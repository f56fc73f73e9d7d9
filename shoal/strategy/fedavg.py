"""Federated Averaging (McMahan et al. 2017, Algorithm 1) and its server-optimizer family.

Each round: sample ``m = max(round(C * K), 1)`` of the ``K`` available clients (or a fixed
``clients_per_round``), or with ``sampling="poisson"`` let each client join independently
with probability ``q = C`` (or ``clients_per_round / K``), as DP accounting wants; send
them the model, aggregate their deltas (weighted by example counts), and hand the
aggregate to the server optimizer. ``ServerSGD(1.0)`` is the paper's rule;
``ServerMomentum`` gives FedAvgM and ``Adaptive`` gives FedAdagrad, FedAdam and FedYogi
(``server_opt.py``). Rounds with fewer than ``min_clients`` results are aborted.
FedNova, FedDyn and SCAFFOLD extend it in their own files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.errors import ConfigError, RoundAbortedError
from shoal.messages import Failure, FailureKind, Scalar, TrainResult, TrainTask
from shoal.rng import Stream
from shoal.sampling import Sampling, SamplingKind
from shoal.strategy.aggregators import Aggregator, weighted_mean
from shoal.strategy.base import RoundContext, Strategy
from shoal.strategy.server_opt import ServerOptimizer, ServerSGD
from shoal.transforms.base import clients_in


@dataclass
class FedAvg(Strategy):
    clients_per_round: int | None = 10
    fraction: float | None = None  # C in the paper; used instead of clients_per_round when set
    min_clients: int = 1  # fewer results than this and the round is abandoned
    sampling: SamplingKind = SamplingKind.FIXED  # "poisson": independent joins (DP accounting)
    server_optimizer: ServerOptimizer = field(default_factory=ServerSGD)
    aggregator: Aggregator = weighted_mean
    client_config: Mapping[str, Scalar] = field(default_factory=dict)  # sent with every task
    # System heterogeneity as in Li et al. 2020, Section 5.2: this share of each round's
    # clients are stragglers that run a uniform random 1..straggler_max_epochs local epochs.
    # drop_stragglers is FedAvg's rule there (their partial work is discarded, as if they
    # missed the deadline: their client state does not advance); FedProx keeps it.
    straggler_fraction: float = 0.0
    straggler_max_epochs: int = 1
    drop_stragglers: bool = False
    _stragglers: dict[int, frozenset[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.sampling = SamplingKind(self.sampling)
        if self.fraction is not None:
            if not 0.0 < self.fraction <= 1.0:
                raise ConfigError(f"strategy.fraction must be in (0, 1], got {self.fraction}")
        elif self.clients_per_round is None or self.clients_per_round < 1:
            raise ConfigError(f"strategy.clients_per_round must be >= 1, got {self.clients_per_round}")
        if not 0.0 <= self.straggler_fraction <= 1.0:
            raise ConfigError(f"strategy.straggler_fraction must be in [0, 1], got {self.straggler_fraction}")
        if self.straggler_max_epochs < 1:
            raise ConfigError(f"strategy.straggler_max_epochs must be >= 1, got {self.straggler_max_epochs}")
        if self.min_clients < 1:
            raise ConfigError(f"strategy.min_clients must be >= 1, got {self.min_clients}")

    def num_to_select(self, available: int) -> int:
        wanted = (
            max(round(self.fraction * available), 1)
            if self.fraction is not None
            else int(self.clients_per_round or 1)
        )
        return min(wanted, available)

    def sampling_for(self, available: int) -> Sampling:
        """How this strategy picks clients from ``available``: what DP accounting composes."""
        if self.sampling is SamplingKind.POISSON:
            rate = self.fraction if self.fraction is not None else (self.clients_per_round or 1) / available
            return Sampling.poisson(min(rate, 1.0), available)
        return Sampling.fixed(self.num_to_select(available), available)

    def configure_train(
        self, ctx: RoundContext, params: np.ndarray, available: Sequence[str]
    ) -> list[TrainTask]:
        if len(available) < self.min_clients:
            raise RoundAbortedError(
                f"round {ctx.round}: only {len(available)} clients available, "
                f"min_clients is {self.min_clients}"
            )
        plan = self.sampling_for(len(available))
        if plan.kind is SamplingKind.POISSON:
            picked = np.flatnonzero(ctx.rng().random(len(available)) < plan.rate)
        else:
            picked = np.sort(ctx.rng().choice(len(available), size=plan.size, replace=False))
        chosen = [available[int(i)] for i in picked]
        rng = ctx.rng(Stream.STRAGGLERS)
        slow = rng.random(len(chosen)) < self.straggler_fraction
        epochs = rng.integers(1, self.straggler_max_epochs + 1, len(chosen))
        self._stragglers = {ctx.round: frozenset(c for c, s in zip(chosen, slow, strict=True) if s)}
        return [
            TrainTask(
                ctx.round,
                cid,
                params,
                ctx.client_seed(cid),
                {**self.client_config, "local_epochs": int(e)} if s else self.client_config,
                self.task_arrays(),
            )
            for cid, s, e in zip(chosen, slow, epochs, strict=True)
        ]

    def task_arrays(self) -> dict[str, np.ndarray]:
        """Arrays sent with every task besides the model (SCAFFOLD's control variate)."""
        return {}

    def screen(
        self, ctx: RoundContext, results: Sequence[TrainResult]
    ) -> tuple[list[TrainResult], list[Failure]]:
        if not self.drop_stragglers:
            return list(results), []
        slow = self._stragglers.get(ctx.round, frozenset())
        dropped = [
            Failure(r.round, r.client_id, FailureKind.DROPPED, "straggler: dropped at the deadline")
            for r in results
            if r.client_id in slow
        ]
        return [r for r in results if r.client_id not in slow], dropped

    def aggregate_train(
        self,
        ctx: RoundContext,
        params: np.ndarray,
        results: Sequence[TrainResult],
        failures: Sequence[Failure],
    ) -> np.ndarray:
        return self.apply(params, self.accepted(ctx, results, failures))

    def accepted(
        self, ctx: RoundContext, results: Sequence[TrainResult], failures: Sequence[Failure]
    ) -> list[TrainResult]:
        """The results this round aggregates; raises RoundAbortedError when too few remain."""
        if clients_in(results) < self.min_clients:
            raise RoundAbortedError(
                f"round {ctx.round}: {clients_in(results)} results ({len(failures)} failed), "
                f"min_clients is {self.min_clients}"
            )
        return list(results)

    def apply(self, params: np.ndarray, results: Sequence[TrainResult]) -> np.ndarray:
        """The server optimizer's step from ``params`` along the results' aggregate."""
        deltas = [r.payload["delta"] for r in results]
        weights = np.array([r.num_examples for r in results], dtype=np.float64)
        return self.server_optimizer.step(params, self.aggregator(deltas, weights))

    def state_dict(self) -> dict[str, Any]:
        return {"server_optimizer": self.server_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.server_optimizer.load_state_dict(state.get("server_optimizer", {}))
