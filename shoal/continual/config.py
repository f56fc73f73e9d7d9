"""The ``[continual]`` settings: how client data drifts, and what devices do against forgetting.

Reading them costs no torch (as the rest of ``shoal.config``): the schedule and the
trainer settings are built from them inside the methods that need them.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.errors import ConfigError

if TYPE_CHECKING:
    from shoal.data.datasets import FederatedDataset
    from shoal.data.drift import DriftSchedule


class DriftKind(enum.StrEnum):
    """How client data changes over rounds (``shoal/data/drift.py``)."""

    NEW_CLASSES = "new-classes"  # classes unlocked in stages (class-incremental learning)
    LABEL_SHIFT = "label-shift"  # each client's label mix moves from one Dirichlet draw to another
    JOINING = "joining"  # clients (speaking roles, new users) join at given rounds


@dataclass(frozen=True)
class ContinualConfig:
    """Drift and the defences against forgetting; every default turns everything off."""

    drift: DriftKind | None = None
    # Rounds at which a new stage begins; round 1 starts stage 0. label-shift: (start, end)
    # of the move from the first mix to the second, or one round for an abrupt switch.
    drift_rounds: tuple[int, ...] = ()
    # new-classes: False trains each stage on its own classes only (class-incremental, where
    # forgetting shows); True keeps earlier stages' classes in the data.
    drift_keep_old: bool = False
    drift_alpha: float = 0.5  # label-shift: Dirichlet concentration of a client's two mixes
    drift_share: float = 0.5  # label-shift: the share of a client's pool in one round's data
    replay_size: int = 0  # examples each device keeps in its reservoir (0: no replay)
    replay_share: float = 0.5  # of what a device trains on, the share of remembered examples
    ewc_lambda: float = 0.0  # EWC's penalty strength (0: no EWC)
    ewc_decay: float = 1.0  # online EWC's gamma: earlier stages' Fisher is scaled by it at each new stage

    def __post_init__(self) -> None:
        if self.drift is not None:
            object.__setattr__(self, "drift", _kind(self.drift))
        object.__setattr__(self, "drift_rounds", _rounds(self.drift_rounds))
        if self.drift is not None and not self.drift_rounds:
            raise ConfigError(
                f"continual.drift = {self.drift.value!r} needs drift_rounds, the rounds at which "
                "the data changes; e.g. drift_rounds = [15]"
            )
        if self.drift is DriftKind.LABEL_SHIFT and len(self.drift_rounds) > 2:
            raise ConfigError(
                f"continual.drift_rounds for label-shift is [start, end] of the move (or one round "
                f"for an abrupt switch), got {list(self.drift_rounds)}"
            )
        if not self.drift_alpha > 0:
            raise ConfigError(
                f"continual.drift_alpha must be > 0 (a Dirichlet concentration), got {self.drift_alpha}"
            )
        if not 0 < self.drift_share <= 1:
            raise ConfigError(f"continual.drift_share must be in (0, 1], got {self.drift_share}")
        if (
            isinstance(self.replay_size, bool)
            or not isinstance(self.replay_size, int)
            or self.replay_size < 0
        ):
            raise ConfigError(
                f"continual.replay_size must be a whole number of examples >= 0, got {self.replay_size!r}"
            )
        if not 0 < self.replay_share < 1:
            raise ConfigError(
                f"continual.replay_share must be in (0, 1) (0.5: one remembered example per new "
                f"one), got {self.replay_share}"
            )
        if not self.ewc_lambda >= 0:
            raise ConfigError(f"continual.ewc_lambda must be >= 0, got {self.ewc_lambda}")
        if not 0 < self.ewc_decay <= 1:
            raise ConfigError(f"continual.ewc_decay must be in (0, 1] (1: plain EWC), got {self.ewc_decay}")
        if self.ewc_lambda > 0 and not self.drift_rounds:
            raise ConfigError(
                "continual.ewc_lambda needs drift_rounds: EWC consolidates what it learnt at each "
                "stage boundary; set drift_rounds (with drift) or ewc_lambda = 0"
            )

    def schedule(self, base: FederatedDataset, seed: int) -> DriftSchedule | None:
        """The drift schedule over ``base``'s clients, drawn from the run's ``seed`` (None: no drift)."""
        from shoal.data.drift import schedule_for  # torch: only where the data is built

        if self.drift is None:
            return None
        return schedule_for(
            self.drift,
            base,
            self.drift_rounds,
            seed,
            keep_old=self.drift_keep_old,
            alpha=self.drift_alpha,
            share=self.drift_share,
        )


def settings(trainer: Any) -> ContinualConfig:
    """The trainer's continual settings (the config puts ``[continual]`` in ``TorchTrainer``;
    a user's trainer may have none)."""
    found = getattr(trainer, "continual", None)
    return found if isinstance(found, ContinualConfig) else ContinualConfig()


def _kind(value: DriftKind | str) -> DriftKind:
    try:
        return DriftKind(value)
    except ValueError:
        allowed = ", ".join(repr(k.value) for k in DriftKind)
        raise ConfigError(f"continual.drift {value!r} is unknown; choose {allowed}") from None


def _rounds(rounds: Sequence[int]) -> tuple[int, ...]:
    """Stage boundaries as increasing ints >= 2 (round 1 is always the first round of stage 0)."""
    if isinstance(rounds, int | str) or not all(
        isinstance(r, int) and not isinstance(r, bool) for r in rounds
    ):
        raise ConfigError(f"continual.drift_rounds must be a list of rounds, got {rounds!r}; e.g. [15]")
    out = tuple(rounds)
    if any(r < 2 for r in out) or any(b <= a for a, b in itertools.pairwise(out)):
        raise ConfigError(
            f"continual.drift_rounds must be increasing rounds >= 2 (round 1 starts stage 0), "
            f"got {list(out)}; e.g. [15] or [10, 20]"
        )
    return out
