"""FedBuff: buffered asynchronous aggregation (Nguyen et al., AISTATS 2022).

``concurrency`` devices train at any moment; whenever ``buffer_size`` results have come
back, the server aggregates them and moves on, and each freed device slot goes to a new
device with the newest model. A result trained on a model ``tau`` server steps old is
weighted down by ``(1 + tau) ** -staleness_exponent`` (the paper's polynomial rule, 0.5).

One server step is one round of shoal's loop: ``configure_train`` fills the slots the
backend's devices still in flight leave free (``ctx.in_flight``), the backend returns the
next ``buffer_size`` outcomes in the order they reach the server (whichever round sent
them), and ``aggregate_train`` folds the results as FedAvg does,
with example counts times staleness weights over the example counts, so fresh results
alone give FedAvg's step to the bit: with ``buffer_size`` = ``concurrency`` and nothing
in flight, FedBuff is synchronous FedAvg. The arrival order depends on a clock: it runs
on a fleet (virtual time) or on ``shoal server`` (wall time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.errors import ConfigError
from shoal.messages import Failure, TrainResult, TrainTask
from shoal.sampling import SamplingKind
from shoal.strategy.base import RoundContext
from shoal.strategy.fedavg import FedAvg


@dataclass
class FedBuff(FedAvg):
    buffer_size: int = 10  # K: results per server step
    concurrency: int | None = None  # devices training at once; None: clients_per_round
    staleness_exponent: float = 0.5  # weight (1 + tau)^-a; 0: staleness ignored
    # client id -> (round its task was sent in, order sent): aggregates in the order sent
    _order: dict[str, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)
    _sent: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.buffer_size < 1:
            raise ConfigError(f"strategy.buffer_size must be >= 1, got {self.buffer_size}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"strategy.concurrency must be >= 1, got {self.concurrency}")
        if self.staleness_exponent < 0:
            raise ConfigError(f"strategy.staleness_exponent must be >= 0, got {self.staleness_exponent}")
        if self.sampling is SamplingKind.POISSON or self.fraction is not None:
            raise ConfigError(
                "fedbuff keeps a fixed number of devices busy: set concurrency, not fraction or poisson"
            )

    @property
    def slots(self) -> int:
        return int(self.concurrency or self.clients_per_round or 1)

    def configure_train(
        self, ctx: RoundContext, params: np.ndarray, available: Sequence[str]
    ) -> list[TrainTask]:
        """Fill the free slots, drawn from ``available`` as FedAvg draws its cohort. The
        backends leave busy devices out of ``available``, so a population of millions is
        never walked here."""
        busy = ctx.in_flight
        self._order = {c: v for c, v in self._order.items() if c in busy}  # lost work (a restart) goes
        idle = available
        size = min(self.slots - len(busy), len(idle))
        if size <= 0:
            return []
        picked = np.sort(ctx.rng().choice(len(idle), size=size, replace=False))
        tasks = [
            TrainTask(ctx.round, idle[int(i)], params, ctx.client_seed(idle[int(i)]), self.client_config, {})
            for i in picked
        ]
        for t in tasks:
            self._order[t.client_id] = (t.round, self._sent)
            self._sent += 1
        return tasks

    def aggregate_train(
        self,
        ctx: RoundContext,
        params: np.ndarray,
        results: Sequence[TrainResult],
        failures: Sequence[Failure],
    ) -> np.ndarray:
        outcomes: list[TrainResult | Failure] = [*results, *failures]
        sent = {o.client_id: self._order.pop(o.client_id, (o.round, 0)) for o in outcomes}
        kept = sorted(self.accepted(ctx, results, failures), key=lambda r: sent[r.client_id])
        n = np.array([r.num_examples for r in kept], dtype=np.float64)
        stale = np.array([ctx.round - r.round for r in kept], dtype=np.float64)
        weights = n * (1.0 + stale) ** -self.staleness_exponent
        step = self.aggregator([r.payload["delta"] for r in kept], weights)
        shrink = float(weights.sum() / n.sum())  # exactly 1.0 when every result is fresh
        if shrink != 1.0:
            step = (step * np.float32(shrink)).astype(np.float32)
        return self.server_optimizer.step(params, step)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "order": {c: list(v) for c, v in self._order.items()},
            "sent": self._sent,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._order = {c: (int(v[0]), int(v[1])) for c, v in state.get("order", {}).items()}
        self._sent = int(state.get("sent", 0))
