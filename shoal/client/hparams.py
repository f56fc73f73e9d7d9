"""The default trainer's settings: the config's ``[trainer]`` table.

Apart from the trainer itself (``shoal.client.trainer``) so that reading a config imports
no torch; ``build`` imports it where a client is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal.config.names import AttackName, OptimizerName, PersonalizationName
from shoal.continual.config import ContinualConfig
from shoal.errors import ConfigError
from shoal.rng import NoiseName

if TYPE_CHECKING:
    from shoal.client.app import ClientApp
    from shoal.models import ModelFactory


@dataclass(frozen=True)
class Personalization:
    """The config's ``[personalization]`` table: a model of each client's own (shoal/personal/).

    Every method keeps what is personal in the client's state, on the device, and federated
    evaluation then scores each client's personal model (with the global one beside it)."""

    method: PersonalizationName | None = None  # None: one global model for everyone
    # fedper, fedrep: glob patterns over parameter names ("4.*"); () is the model's last layer
    personal_layers: tuple[str, ...] = ()
    head_epochs: int = 1  # fedrep: epochs on the personal head, body frozen, before the body's
    ditto_lambda: float = 0.1  # ditto: the pull toward the global model (infinite: FedAvg's)
    apfl_alpha: float = 0.25  # apfl: the personal model's starting share in the mixture
    apfl_adaptive: bool = True  # apfl: learn alpha by gradient descent (Deng et al. 2020)
    finetune_epochs: int = 1  # finetune: local epochs on the global model before evaluating it

    def __post_init__(self) -> None:
        if self.method is not None:
            object.__setattr__(self, "method", PersonalizationName(self.method))
        _check_positive("personalization.head_epochs", self.head_epochs)
        _check_positive("personalization.finetune_epochs", self.finetune_epochs)
        if not self.ditto_lambda >= 0:
            raise ConfigError(f"personalization.ditto_lambda must be >= 0, got {self.ditto_lambda}")
        if not 0.0 <= self.apfl_alpha <= 1.0:
            raise ConfigError(f"personalization.apfl_alpha must be in [0, 1], got {self.apfl_alpha}")
        layered = (PersonalizationName.FEDPER, PersonalizationName.FEDREP)
        if self.personal_layers and self.method not in layered:
            raise ConfigError(
                "personalization.personal_layers is read by method = 'fedper' or 'fedrep' only; "
                f"it is set with method = {self.method and self.method.value!r}"
            )


@dataclass(frozen=True)
class TorchTrainer:
    """Local training hyperparameters; ``build`` makes the client app in each process.

    A round's task may override ``lr``, ``local_epochs`` and ``local_steps`` through its
    ``config`` (how strategies model stragglers or decay the client learning rate).
    """

    lr: float = 0.05
    local_epochs: int = 1
    local_steps: int | None = None  # when set, exactly this many minibatch steps, cycling epochs
    batch_size: int = 32
    optimizer: OptimizerName = OptimizerName.SGD
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_batch_size: int = 1024
    # DP-SGD on the device (Opacus): per-example clipping and noise, Poisson-sampled batches
    dp_sgd_noise_multiplier: float | None = None  # set to turn DP-SGD on
    dp_sgd_max_grad_norm: float = 1.0  # per-example gradient clip
    dp_sgd_delta: float = 1e-5  # for the example-level epsilon each client reports
    dp_sgd_noise: NoiseName = NoiseName.SECURE
    # For evaluating defences only: this share of the population (chosen by attack_seed) is
    # hostile and runs `attack` (shoal/attacks/poison.py); attack_scale None: the attack's own
    attack: AttackName | None = None
    attack_fraction: float = 0.2
    attack_scale: float | None = None
    attack_seed: int = 0
    attack_target: int = 0  # backdoor: the label triggered inputs are taught to get
    # the [personalization] and [continual] tables, which the config puts here so that every
    # device has them (replay and EWC run on the device)
    personalization: Personalization = field(default_factory=Personalization, metadata={"table": True})
    continual: ContinualConfig = field(default_factory=ContinualConfig, metadata={"table": True})
    # [eval] metrics, which devices score their holdouts by too (shoal/scores.py)
    eval_metrics: tuple[str, ...] = field(default=(), metadata={"table": True})

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", OptimizerName(self.optimizer))
        _check_positive("trainer.lr", self.lr)
        _check_positive("trainer.batch_size", self.batch_size)
        _check_positive("trainer.eval_batch_size", self.eval_batch_size)
        if self.local_steps is None:
            _check_positive("trainer.local_epochs", self.local_epochs)
        else:
            _check_positive("trainer.local_steps", self.local_steps)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"trainer.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"trainer.weight_decay must be >= 0, got {self.weight_decay}")
        object.__setattr__(self, "dp_sgd_noise", NoiseName(self.dp_sgd_noise))
        if self.dp_sgd_noise_multiplier is not None:
            _check_positive("trainer.dp_sgd_noise_multiplier", self.dp_sgd_noise_multiplier)
        _check_positive("trainer.dp_sgd_max_grad_norm", self.dp_sgd_max_grad_norm)
        if not 0 < self.dp_sgd_delta < 1:
            raise ConfigError(f"trainer.dp_sgd_delta must be in (0, 1), got {self.dp_sgd_delta}")
        if self.attack is not None:
            object.__setattr__(self, "attack", AttackName(self.attack))
        if not 0.0 <= self.attack_fraction <= 1.0:
            raise ConfigError(f"trainer.attack_fraction must be in [0, 1], got {self.attack_fraction}")

    def build(self, model: ModelFactory) -> ClientApp:
        from shoal.client.trainer import TorchClient  # torch: only where a client trains

        return TorchClient(model(), self)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
