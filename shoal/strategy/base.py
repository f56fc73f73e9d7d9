"""The server algorithm's interface.

A strategy chooses clients and builds their tasks (``configure_train``), then folds the
cohort's results into the next global model (``aggregate_train``). Failures arrive as
values; a strategy that cannot commit raises :class:`~shoal.errors.RoundAbortedError`
and the loop keeps the model unchanged. Any state it keeps across rounds (server
optimizer moments, control variates) goes through ``state_dict`` so runs resume exactly.

Every optional method has a default here, so the round loop calls each one directly:
``payload_keys`` (the result vectors it reads, which the loop validates),
``sampling_for`` (how it picks clients, for DP accounting), ``screen`` (results it will
not count, taken out before the server transforms see the cohort) and the state methods.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from shoal.messages import Failure, TrainResult, TrainTask
from shoal.rng import Stream, generator, secret_seed, seed_for
from shoal.sampling import Sampling


@dataclass(frozen=True)
class RoundContext:
    """Where a round stands; the source of every random draw the strategy makes.

    With ``secret_selection`` (set by the loop when a DP transform relies on
    amplification by sampling) the choice of clients comes from ``os.urandom``: anyone
    who knows the run seed could otherwise tell who was sampled."""

    round: int
    run_seed: int
    secret_selection: bool = False
    # asynchronous rounds: devices still training a task sent in an earlier round
    # (client id -> that round), as the backend reports them
    in_flight: Mapping[str, int] = field(default_factory=dict)

    def rng(self, stream: Stream = Stream.SELECTION) -> np.random.Generator:
        if self.secret_selection and stream is Stream.SELECTION:
            return np.random.default_rng(secret_seed())
        return generator(self.run_seed, self.round, stream)

    def client_seed(self, client_id: str) -> int:
        return seed_for(self.run_seed, self.round, Stream.CLIENT, client_id)


class Strategy(abc.ABC):
    payload_keys: ClassVar[tuple[str, ...]] = ("delta",)  # result vectors it reads; the loop checks them

    @abc.abstractmethod
    def configure_train(
        self, ctx: RoundContext, params: np.ndarray, available: Sequence[str]
    ) -> list[TrainTask]:
        """Pick this round's clients among ``available`` and say what each should do."""

    @abc.abstractmethod
    def aggregate_train(
        self,
        ctx: RoundContext,
        params: np.ndarray,
        results: Sequence[TrainResult],
        failures: Sequence[Failure],
    ) -> np.ndarray:
        """The next global weights (a new array). Raise RoundAbortedError to skip the round."""

    def sampling_for(self, available: int) -> Sampling | None:
        """How a round picks clients from ``available`` (None: not a sampling DP can count)."""
        return None

    def screen(
        self, ctx: RoundContext, results: Sequence[TrainResult]
    ) -> tuple[list[TrainResult], list[Failure]]:
        """Split results into those this round counts and those it drops (as Failures),
        before any server transform sees the cohort. Only counted results commit their
        client's state."""
        return list(results), []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
