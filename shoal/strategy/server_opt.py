"""Server optimizers: how the aggregated client update moves the global model.

FedAvg treats the weighted mean of the client deltas, Delta, as a pseudo-gradient step.
A server optimizer decides what to do with it (Reddi et al. 2021, "Adaptive Federated
Optimization", Algorithm 2; Hsu et al. 2019 for server momentum):

    ServerSGD       x <- x + lr * Delta                       (FedAvg with a server lr)
    ServerMomentum  v <- beta v + Delta;  x <- x + lr * v     (FedAvgM)
    Adaptive        m <- b1 m + (1 - b1) Delta
                    v <- v + Delta^2                                      (FedAdagrad)
                    v <- b2 v + (1 - b2) Delta^2                          (FedAdam)
                    v <- v - (1 - b2) Delta^2 sign(v - Delta^2)           (FedYogi)
                    x <- x + lr * m / (sqrt(v) + tau)

As in the paper, there is no bias correction, and v starts at tau^2. Optimizer state
(momentum, moments) goes through ``state_dict`` so a resumed run continues exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shoal.errors import ConfigError


class ServerOptimizer(Protocol):
    def step(self, params: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """The next global weights (a new array) from the aggregated delta."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"strategy.{name} must be > 0, got {value}")


def _unit(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"strategy.{name} must be in [0, 1), got {value}")


@dataclass
class ServerSGD:
    lr: float = 1.0

    def __post_init__(self) -> None:
        _positive("server_lr", self.lr)

    def step(self, params: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return params + np.float32(self.lr) * delta

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class ServerMomentum:
    lr: float = 1.0
    momentum: float = 0.9
    velocity: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _positive("server_lr", self.lr)
        _unit("server_momentum", self.momentum)

    def step(self, params: np.ndarray, delta: np.ndarray) -> np.ndarray:
        prev = self.velocity if self.velocity is not None else np.zeros_like(delta)
        self.velocity = np.float32(self.momentum) * prev + delta
        return params + np.float32(self.lr) * self.velocity

    def state_dict(self) -> dict[str, Any]:
        return {} if self.velocity is None else {"velocity": self.velocity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = state.get("velocity")


class AdaptiveRule(enum.StrEnum):
    ADAGRAD = "adagrad"
    ADAM = "adam"
    YOGI = "yogi"


@dataclass
class Adaptive:
    rule: AdaptiveRule
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3  # the adaptivity floor: larger tau is closer to momentum SGD
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.rule = AdaptiveRule(self.rule)
        _positive("server_lr", self.lr)
        _positive("tau", self.tau)
        _unit("beta1", self.beta1)
        _unit("beta2", self.beta2)

    def step(self, params: np.ndarray, delta: np.ndarray) -> np.ndarray:
        d = delta.astype(np.float64)
        m = self.m if self.m is not None else np.zeros_like(d)
        v = self.v if self.v is not None else np.full_like(d, self.tau**2)
        m = self.beta1 * m + (1 - self.beta1) * d
        sq = d * d
        if self.rule is AdaptiveRule.ADAGRAD:
            v = v + sq
        elif self.rule is AdaptiveRule.ADAM:
            v = self.beta2 * v + (1 - self.beta2) * sq
        else:
            v = v - (1 - self.beta2) * sq * np.sign(v - sq)
        self.m, self.v = m, v
        return (params + self.lr * m / (np.sqrt(v) + self.tau)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.m is None or self.v is None else {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v = state.get("m"), state.get("v")
