"""What every personalization method shares: it is on when the trainer's
``personalization.method`` names it."""

from __future__ import annotations

from typing import Any, ClassVar

from shoal.client.algorithm import ClientAlgorithm, LocalRun
from shoal.client.hparams import Personalization
from shoal.config.names import PersonalizationName
from shoal.messages import TrainTask
from shoal.rng import Stream, seed_for


def settings(trainer: Any) -> Personalization:
    """The trainer's personalization settings (a user's trainer may have none)."""
    found = getattr(trainer, "personalization", None)
    return found if isinstance(found, Personalization) else Personalization()


def own_seed(seed: int, round: int, client_id: str, what: str) -> int:
    """A seed for a personal model's batches, apart from the shared model's."""
    return seed_for(seed, round, Stream.PERSONAL, f"{what}:{client_id}")


class PersonalMethod(ClientAlgorithm):
    """Base of the methods: on when the trainer names its method. One method at a time
    (the config takes one name); a method that replaces the local loop refuses DP-SGD,
    which replaces it too."""

    method: ClassVar[PersonalizationName]

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return settings(run.trainer).method is self.method
