"""The default supervised client: local SGD (or Adam) on in-memory tensors.

Speed matters here more than anywhere: a simulation runs this once per client per round.
So the model is built once per process and its weights live in one flat buffer
(:class:`~shoal.params.FlatModule`); loading the global model is one copy, batches are
``index_select`` on tensors already in memory (no ``DataLoader``, no collation), and the
loss is summed on-device without a sync per step.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoal.client.app import ClientApp
from shoal.client.state import ClientState
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.errors import ConfigError
from shoal.messages import EvalResult, EvalTask, Scalar, TrainResult, TrainTask
from shoal.models import ModelFactory
from shoal.params import FlatModule, read_only_tensor
from shoal.privacy.dp_sgd import DPSGDRunner, count_steps, example_epsilon
from shoal.privacy.noise import NoiseName
from shoal.strategy.scaffold import CONTROL_DELTA, control_correction, update_control


class OptimizerName(enum.StrEnum):
    SGD = "sgd"
    ADAM = "adam"


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

    def build(self, model: ModelFactory) -> ClientApp:
        return TorchClient(model(), self)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


TASK_OVERRIDES = frozenset({"lr", "local_epochs", "local_steps"})  # task.config keys that replace hparams


class TorchClient:
    """A :class:`ClientApp` over one module reused for every task in this process."""

    def __init__(self, module: nn.Module, hparams: TorchTrainer) -> None:
        self.module = module
        self.flat = FlatModule(module)
        self.hparams = hparams
        self._dp_runner: DPSGDRunner | None = None

    def _hparams_for(self, task: TrainTask) -> TorchTrainer:
        overrides: dict[str, Any] = {k: v for k, v in task.config.items() if k in TASK_OVERRIDES}
        return dataclasses.replace(self.hparams, **overrides) if overrides else self.hparams

    def _optimizer(self, hp: TorchTrainer) -> torch.optim.Optimizer:
        params = list(self.module.parameters())
        if hp.optimizer is OptimizerName.ADAM:
            return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def train(self, task: TrainTask, data: ClientData, state: ClientState) -> TrainResult:
        hp = self._hparams_for(task)
        # SCAFFOLD (Karimireddy et al. 2020): every step follows g + c - c_i.
        correction = control_correction(task, state)
        if correction is not None and hp.optimizer is not OptimizerName.SGD:
            raise ValueError("SCAFFOLD's control update assumes local SGD; set trainer.optimizer = 'sgd'")
        x, y = data.train.x, data.train.y
        n = len(data.train)
        steps = hp.local_steps or hp.local_epochs * math.ceil(n / hp.batch_size)
        self.flat.load(task.params)
        # Dropout and other in-model randomness. The CPU generator alone: torch.manual_seed
        # also visits every accelerator backend, ~100x slower, per client.
        torch.default_generator.manual_seed(task.seed)
        order = torch.Generator().manual_seed(task.seed)
        opt = self._optimizer(hp)
        # FedProx (Li et al. 2020, eq. 2): local objective + mu/2 ||w - w_global||^2.
        mu = float(task.config.get("proximal_mu", 0.0))
        anchor = self._views(read_only_tensor(task.params)) if mu else []
        drift = self._views(torch.from_numpy(correction)) if correction is not None else []
        metrics: dict[str, Scalar] = {}
        if hp.dp_sgd_noise_multiplier is not None:
            if mu or drift:
                raise ValueError("DP-SGD does not combine with FedProx or SCAFFOLD client terms")
            dp_loss, dp_seen = self._dp_sgd().train(
                data.train, opt, steps, hp.batch_size, hp.dp_sgd_noise_multiplier,
                hp.dp_sgd_max_grad_norm, hp.dp_sgd_noise, task.seed,
            )  # fmt: skip
            total = count_steps(state, steps)
            rate = min(1.0, hp.batch_size / n)
            metrics["example_epsilon"] = example_epsilon(
                rate, hp.dp_sgd_noise_multiplier, total, hp.dp_sgd_delta
            )
            return self._result(task, state, n, correction, steps, hp, dp_loss, dp_seen, metrics)
        self.module.train()
        loss_sum = torch.zeros(())
        seen = 0
        perm = torch.randperm(n, generator=order)
        pos = 0
        for _ in range(steps):
            if pos >= n:  # next epoch: a fresh order
                perm, pos = torch.randperm(n, generator=order), 0
            idx = perm[pos : pos + hp.batch_size]
            pos += hp.batch_size
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.module(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            if mu or drift:
                self._correct_gradients(mu, anchor, drift)
            opt.step()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        return self._result(task, state, n, correction, steps, hp, float(loss_sum), seen, metrics)

    def _result(
        self,
        task: TrainTask,
        state: ClientState,
        n: int,
        correction: np.ndarray | None,
        steps: int,
        hp: TorchTrainer,
        loss_sum: float,
        seen: int,
        metrics: dict[str, Scalar],
    ) -> TrainResult:
        delta = self.flat.flat.numpy() - task.params  # a new array; the buffer is reused
        payload = {"delta": delta}
        if correction is not None:
            payload[CONTROL_DELTA] = update_control(task, state, delta, steps, hp.lr)
        return TrainResult(
            round=task.round,
            client_id=task.client_id,
            num_examples=n,
            payload=payload,
            metrics={"train_loss": loss_sum / max(seen, 1), "local_steps": steps, **metrics},
        )

    def _dp_sgd(self) -> DPSGDRunner:
        if self._dp_runner is None:
            self._dp_runner = DPSGDRunner(self.module)
        return self._dp_runner

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a flat vector, in ``self.module.parameters()`` order."""
        by_name = self.flat.spec.split(flat)
        return [by_name[name] for name, _ in self.module.named_parameters()]

    @torch.no_grad()
    def _correct_gradients(self, mu: float, anchor: list[torch.Tensor], drift: list[torch.Tensor]) -> None:
        """grad += mu (w - w_global) (FedProx's proximal term) and + (c - c_i) (SCAFFOLD)."""
        for i, p in enumerate(self.module.parameters()):
            if p.grad is None:
                continue
            if mu:
                p.grad.add_(p - anchor[i], alpha=mu)
            if drift:
                p.grad.add_(drift[i])

    def evaluate(self, task: EvalTask, data: ClientData) -> EvalResult:
        if data.test is None or len(data.test) == 0:
            raise ValueError(f"client {task.client_id} holds no evaluation data (holdout_fraction is 0)")
        self.flat.load(task.params)
        loss, acc = evaluate_module(self.module, data.test, self.hparams.eval_batch_size)
        return EvalResult(task.round, task.client_id, len(data.test), {"loss": loss, "accuracy": acc})


@torch.no_grad()
def evaluate_module(module: nn.Module, data: ArrayDataset, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``module`` on ``data``."""
    module.eval()
    loss_sum, correct = 0.0, 0
    for s in range(0, len(data), batch_size):
        xb, yb = data.x[s : s + batch_size], data.y[s : s + batch_size]
        logits = module(xb)
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(len(data), 1)
    return loss_sum / n, correct / n
