"""The server algorithm's interface.

A strategy chooses clients and builds their tasks (``configure_train``), then folds the
cohort's results into the next global model (``aggregate_train``). Failures arrive as
values; a strategy that cannot commit raises :class:`~shoal.errors.RoundAbortedError`
and the loop keeps the model unchanged. Any state it keeps across rounds (server
optimizer moments, control variates) goes through ``state_dict`` so runs resume exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shoal.messages import Failure, TrainResult, TrainTask
from shoal.rng import Stream, generator, seed_for


@dataclass(frozen=True)
class RoundContext:
    """Where a round stands; the source of every random draw the strategy makes."""

    round: int
    run_seed: int

    def rng(self, stream: Stream = Stream.SELECTION) -> np.random.Generator:
        return generator(self.run_seed, self.round, stream)

    def client_seed(self, client_id: str) -> int:
        return seed_for(self.run_seed, self.round, Stream.CLIENT, client_id)


@runtime_checkable
class Strategy(Protocol):
    def configure_train(
        self, ctx: RoundContext, params: np.ndarray, available: Sequence[str]
    ) -> list[TrainTask]:
        """Pick this round's clients among ``available`` and say what each should do."""
        ...

    def aggregate_train(
        self,
        ctx: RoundContext,
        params: np.ndarray,
        results: Sequence[TrainResult],
        failures: Sequence[Failure],
    ) -> np.ndarray:
        """The next global weights (a new array). Raise RoundAbortedError to skip the round."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
