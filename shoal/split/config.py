"""What a split-learning run is: the protocol, where the model is cut, how devices train."""

from __future__ import annotations

import math
from dataclasses import dataclass

from shoal.config.names import SplitProtocol
from shoal.errors import ConfigError
from shoal.rng import NoiseName


@dataclass(frozen=True)
class SplitConfig:
    """A split-learning run's settings (the server's; a device takes its noise from its own)."""

    cuts: tuple[int, ...]  # one layer index (vanilla) or two (U-shaped: the head stays on the device)
    protocol: SplitProtocol = SplitProtocol.SPLITNN
    lr: float = 0.05  # plain SGD on both sides: it has no state to relay or average
    batch_size: int = 32
    local_epochs: int = 1
    clients_per_round: int | None = None  # None: every client, every round
    seed: int = 0
    # Gaussian noise added on the device to what it sends (std, in activation units). It blurs
    # the activations; it is not differential privacy (no clipping bounds their sensitivity).
    activation_noise: float = 0.0
    noise: NoiseName = NoiseName.SECURE  # SEEDED draws the noise from the turn's seed (experiments)
    # The most examples one device may train on in a turn: with local_epochs and batch_size it
    # bounds the batches (and the server compute) one device can ask for.
    max_num_examples: int = 100_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "cuts", tuple(self.cuts))
        object.__setattr__(self, "protocol", SplitProtocol(self.protocol))
        object.__setattr__(self, "noise", NoiseName(self.noise))
        if len(self.cuts) not in (1, 2):
            raise ConfigError(f"cuts must be one layer index or two (U-shaped), got {list(self.cuts)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        for name in ("batch_size", "local_epochs", "max_num_examples"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ConfigError(f"clients_per_round must be >= 1 (or None: all), got {self.clients_per_round}")
        if not (self.activation_noise >= 0 and math.isfinite(self.activation_noise)):
            raise ConfigError(f"activation_noise must be a std >= 0, got {self.activation_noise}")

    @property
    def u_shaped(self) -> bool:
        return len(self.cuts) == 2

    @property
    def max_batches(self) -> int:
        """Batches one device may send in a turn."""
        return math.ceil(self.max_num_examples / self.batch_size) * self.local_epochs


__all__ = ["SplitConfig", "SplitProtocol"]
