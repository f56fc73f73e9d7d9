"""How a round picks its clients, stated so that privacy accounting can model it exactly."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shoal.errors import ConfigError


class SamplingKind(enum.StrEnum):
    POISSON = "poisson"
    FIXED = "fixed"


@dataclass(frozen=True)
class Sampling:
    """How a round picks its clients: ``population`` available, and either a Poisson
    ``rate`` q or a fixed ``size`` m drawn without replacement."""

    kind: SamplingKind
    population: int
    rate: float = 0.0
    size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SamplingKind(self.kind))
        if self.population < 1:
            raise ConfigError(f"sampling needs at least one client, got population {self.population}")
        if self.kind is SamplingKind.POISSON and not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"Poisson sampling rate must be in (0, 1], got {self.rate}")
        if self.kind is SamplingKind.FIXED and not 1 <= self.size <= self.population:
            raise ConfigError(f"fixed sample size must be in [1, {self.population}], got {self.size}")

    @classmethod
    def poisson(cls, rate: float, population: int) -> Sampling:
        return cls(SamplingKind.POISSON, population, rate=rate)

    @classmethod
    def fixed(cls, size: int, population: int) -> Sampling:
        return cls(SamplingKind.FIXED, population, size=size)

    @property
    def expected_size(self) -> float:
        """E[cohort size]: qN or m; DP-FedAvg divides the noised sum by it."""
        return self.rate * self.population if self.kind is SamplingKind.POISSON else float(self.size)
