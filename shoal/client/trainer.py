"""The default supervised client: local SGD (or Adam) on in-memory tensors.

Speed matters here more than anywhere: a simulation runs this once per client per round.
So the model is built once per process and its weights live in one flat buffer
(:class:`~shoal.params.FlatModule`); loading the global model is one copy, batches are
``index_select`` on tensors already in memory (no ``DataLoader``, no collation), and the
loss is summed on-device without a sync per step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shoal.client.algorithm import (
    GradientTerm,
    LocalRun,
    active_for,
    combined_term,
    finish_all,
    local_data,
    local_loop,
)
from shoal.client.hparams import TorchTrainer
from shoal.client.state import ClientState
from shoal.config.names import OptimizerName
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.messages import EvalResult, EvalTask, TrainResult, TrainTask
from shoal.params import FlatModule, read_only_tensor

TASK_OVERRIDES = frozenset({"lr", "local_epochs", "local_steps"})  # task.config keys that replace hparams


def local_run(hparams: TorchTrainer, task: TrainTask, num_examples: int) -> LocalRun:
    """What a client will do for ``task``: the trainer's settings with the task's overrides."""
    overrides: dict[str, Any] = {k: v for k, v in task.config.items() if k in TASK_OVERRIDES}
    hp = dataclasses.replace(hparams, **overrides) if overrides else hparams
    steps = hp.local_steps or hp.local_epochs * math.ceil(num_examples / hp.batch_size)
    return LocalRun(steps, hp.lr, hp.batch_size, num_examples, hp.optimizer.value, hp.momentum, hp)


class TorchClient:
    """A :class:`ClientApp` over one module reused for every task in this process."""

    def __init__(self, module: nn.Module, hparams: TorchTrainer) -> None:
        self.module = module
        self.flat = FlatModule(module)
        self.hparams = hparams

    def _optimizer(self, hp: TorchTrainer) -> torch.optim.Optimizer:
        params = list(self.module.parameters())
        if hp.optimizer is OptimizerName.ADAM:
            return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def train(self, task: TrainTask, data: ClientData, state: ClientState) -> TrainResult:
        n = len(data.train)
        run = local_run(self.hparams, task, n)
        algorithms = active_for(task, run)  # FedProx, SCAFFOLD, DP-SGD, ...: whatever the task asks
        data = local_data(algorithms, task, data, run, self.module)
        term = combined_term(algorithms, task, state, run)
        self.flat.load(task.params)
        # Dropout and other in-model randomness. The CPU generator alone: torch.manual_seed
        # also visits every accelerator backend, ~100x slower, per client.
        torch.default_generator.manual_seed(task.seed)
        opt = self._optimizer(run.trainer)
        loop = local_loop(algorithms)
        if loop is not None:
            loss_sum, seen = loop(self.module, data.train, opt, run, task.seed)
        else:
            loss_sum, seen = self._minibatch_loop(task, data, opt, run, term)
        delta = self.flat.flat.numpy() - task.params  # a new array; the buffer is reused
        extra = finish_all(algorithms, task, state, delta, run)
        return TrainResult(
            round=task.round,
            client_id=task.client_id,
            num_examples=n,
            payload={"delta": delta, **extra.payload},
            metrics={"train_loss": loss_sum / max(seen, 1), "local_steps": run.steps, **extra.metrics},
        )

    def _minibatch_loop(
        self,
        task: TrainTask,
        data: ClientData,
        opt: torch.optim.Optimizer,
        run: LocalRun,
        term: GradientTerm | None,
    ) -> tuple[float, int]:
        x, y, n = data.train.x, data.train.y, len(data.train)
        order = torch.Generator().manual_seed(task.seed)
        coef = term.coef if term is not None else 0.0
        anchor = self._views(read_only_tensor(task.params)) if coef else []
        shift = []
        if term is not None and term.shift is not None:
            shift = self._views(torch.from_numpy(term.shift))
        self.module.train()
        loss_sum = torch.zeros(())
        seen = 0
        perm = torch.randperm(n, generator=order)
        pos = 0
        for _ in range(run.steps):
            if pos >= n:  # next epoch: a fresh order
                perm, pos = torch.randperm(n, generator=order), 0
            idx = perm[pos : pos + run.batch_size]
            pos += run.batch_size
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.module(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            if coef or shift:
                self._add_term(coef, anchor, shift)
            opt.step()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        return float(loss_sum), seen

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a flat vector, in ``self.module.parameters()`` order."""
        by_name = self.flat.spec.split(flat)
        return [by_name[name] for name, _ in self.module.named_parameters()]

    @torch.no_grad()
    def _add_term(self, coef: float, anchor: list[torch.Tensor], shift: list[torch.Tensor]) -> None:
        """grad += coef (w - w_global) + shift: the client algorithms' per-step term."""
        for i, p in enumerate(self.module.parameters()):
            if p.grad is None:
                continue
            if coef:
                p.grad.add_(p - anchor[i], alpha=coef)
            if shift:
                p.grad.add_(shift[i])

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
