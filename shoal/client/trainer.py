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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoal.client.algorithm import (
    GradientTerm,
    Local,
    LocalRun,
    active_for,
    combined_term,
    finish_all,
    local_data,
    local_loop,
    personal_weights,
    start_params,
)
from shoal.client.hparams import TorchTrainer
from shoal.client.state import ClientState
from shoal.config.names import OptimizerName
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.messages import EvalResult, EvalTask, TrainResult, TrainTask
from shoal.params import FlatModule, ParamSpec, read_only_tensor
from shoal.scores import scores

TASK_OVERRIDES = frozenset({"lr", "local_epochs", "local_steps"})  # task.config keys that replace hparams


def local_run(
    hparams: TorchTrainer, config: Mapping[str, Any], num_examples: int, spec: ParamSpec | None = None
) -> LocalRun:
    """What a client will do: the trainer's settings with a task's ``config`` overrides."""
    overrides: dict[str, Any] = {k: v for k, v in config.items() if k in TASK_OVERRIDES}
    hp = dataclasses.replace(hparams, **overrides) if overrides else hparams
    steps = hp.local_steps or hp.local_epochs * math.ceil(num_examples / hp.batch_size)
    return LocalRun(steps, hp.lr, hp.batch_size, num_examples, hp.optimizer.value, hp.momentum, hp, spec)


def batches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """The example indices of ``steps`` minibatches: epochs of a fresh seeded permutation
    each (the vectorized cohorts draw the same ones)."""
    order = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=order), 0
    for _ in range(steps):
        if pos >= n:  # next epoch: a fresh order
            perm, pos = torch.randperm(n, generator=order), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


class TorchClient:
    """A :class:`ClientApp` over one module reused for every task in this process; also
    the :class:`~shoal.client.algorithm.LocalModel` a replaced loop trains through."""

    def __init__(self, module: nn.Module, hparams: TorchTrainer) -> None:
        self.module = module
        self.flat = FlatModule(module)
        # batch norm cannot normalize a batch of one example in training: fit skips an
        # epoch's last batch of one (a client of 49 examples at batch size 16)
        self._batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
        self.hparams = hparams
        self._run = hparams  # the settings of the task being trained (a task may override lr)

    def optimizer(self) -> torch.optim.Optimizer:
        hp, params = self._run, list(self.module.parameters())
        if hp.optimizer is OptimizerName.ADAM:
            return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def weights(self) -> np.ndarray:
        return self.flat.flat.numpy().copy()

    def train(self, task: TrainTask, data: ClientData, state: ClientState) -> TrainResult:
        n = len(data.train)
        run = local_run(self.hparams, task.config, n, self.flat.spec)
        self._run = run.trainer
        algorithms = active_for(task, run)  # FedProx, SCAFFOLD, DP-SGD, ...: whatever the task asks
        data = local_data(algorithms, task, data, run, self.module, state)
        term = combined_term(algorithms, task, state, run)
        start = start_params(algorithms, task, state, run)
        loop = local_loop(algorithms)
        if loop is not None:
            self.flat.load(start)
            torch.default_generator.manual_seed(task.seed)
            loss_sum, seen = loop(Local(task, state, data.train, run, term, start, self))
        else:
            loss_sum, seen = self.fit(start, data.train, run.steps, task.seed, term=term, anchor=task.params)
        delta = self.flat.flat.numpy() - task.params  # a new array; the buffer is reused
        extra = finish_all(algorithms, task, state, delta, run)
        return TrainResult(
            round=task.round,
            client_id=task.client_id,
            num_examples=n,
            payload={"delta": delta, **extra.payload},
            metrics={"train_loss": loss_sum / max(seen, 1), "local_steps": run.steps, **extra.metrics},
        )

    def fit(
        self,
        start: np.ndarray,
        data: ArrayDataset,
        steps: int,
        seed: int,
        *,
        term: GradientTerm | None = None,
        anchor: np.ndarray | None = None,
        prox: float = 0.0,
        frozen: frozenset[str] = frozenset(),
    ) -> tuple[float, int]:
        """The minibatch loop (see :class:`~shoal.client.algorithm.LocalModel`)."""
        self.flat.load(start)
        # Dropout and other in-model randomness. The CPU generator alone: torch.manual_seed
        # also visits every accelerator backend, ~100x slower, per client.
        torch.default_generator.manual_seed(seed)
        opt = self.optimizer()
        coef = term.coef if term is not None else 0.0
        diag = self._views(torch.from_numpy(term.diag)) if term is not None and term.diag is not None else []
        shift = (
            self._views(torch.from_numpy(term.shift)) if term is not None and term.shift is not None else []
        )
        pulled = bool(coef or diag or prox)
        if pulled and anchor is None:
            raise ValueError("a gradient term or a proximal pull needs the anchor it pulls toward")
        at = self._views(read_only_tensor(anchor)) if pulled and anchor is not None else []
        still = [name in frozen for name, _ in self.module.named_parameters()]
        keep = 1.0 / (1.0 + self._run.lr * prox)  # the closed-form proximal step's shrink
        x, y = data.x, data.y
        self.module.train()
        loss_sum = torch.zeros(())
        seen = 0
        for idx in batches(len(data), self._run.batch_size, steps, seed):
            if self._batch_norm and len(idx) == 1 and len(data) > 1:
                continue
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.module(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            if coef or diag or shift:
                self._add_term(coef, diag, at, shift)
            if frozen:
                for p, stays in zip(self.module.parameters(), still, strict=True):
                    if stays:
                        p.grad = None  # the optimizer skips it: no step, decay or momentum
            opt.step()
            if prox:
                self._pull(keep, at, still)
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        return float(loss_sum), seen

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a flat vector, in ``self.module.parameters()`` order."""
        by_name = self.flat.spec.split(flat)
        return [by_name[name] for name, _ in self.module.named_parameters()]

    @torch.no_grad()
    def _add_term(
        self, coef: float, diag: list[torch.Tensor], anchor: list[torch.Tensor], shift: list[torch.Tensor]
    ) -> None:
        """grad += (coef + diag) (w - w_global) + shift: the client algorithms' per-step term."""
        for i, p in enumerate(self.module.parameters()):
            if p.grad is None:
                continue
            if coef:
                p.grad.add_(p - anchor[i], alpha=coef)
            if diag:
                p.grad.addcmul_(diag[i], p - anchor[i])
            if shift:
                p.grad.add_(shift[i])

    @torch.no_grad()
    def _pull(self, keep: float, anchor: list[torch.Tensor], still: list[bool]) -> None:
        """w <- keep w + (1 - keep) anchor: the proximal step of ``lr prox / 2 ||w - anchor||^2``."""
        for p, a, stays in zip(self.module.parameters(), anchor, still, strict=True):
            if not stays:
                p.mul_(keep).add_(a, alpha=1.0 - keep)

    def evaluate(self, task: EvalTask, data: ClientData, state: ClientState) -> EvalResult:
        if data.test is None or len(data.test) == 0:
            raise ValueError(f"client {task.client_id} holds no evaluation data (holdout_fraction is 0)")
        names, batch = self.hparams.eval_metrics, self.hparams.eval_batch_size
        self.flat.load(task.params)
        metrics = score_module(self.module, data.test, names, batch)
        run = local_run(self.hparams, {}, len(data.train), self.flat.spec)
        self._run = run.trainer
        own = personal_weights(task, state, data, run, self)
        if own is not None:  # the personal model's scores, with the global model's beside them
            self.flat.load(own)
            mine = score_module(self.module, data.test, names, batch)
            metrics = mine | {f"global_{k}": v for k, v in metrics.items()}
        return EvalResult(task.round, task.client_id, len(data.test), metrics)


@torch.no_grad()
def evaluate_module(module: nn.Module, data: ArrayDataset, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``module`` on ``data``."""
    got = score_module(module, data, (), batch_size)
    return got["loss"], got["accuracy"]


@torch.no_grad()
def score_module(
    module: nn.Module, data: ArrayDataset, metrics: Sequence[str] = (), batch_size: int = 1024
) -> dict[str, float]:
    """Mean cross-entropy, accuracy and the named ``metrics`` (:mod:`shoal.scores`) of
    ``module`` on ``data``."""
    module.eval()
    loss_sum, correct = 0.0, 0
    kept: list[torch.Tensor] = []
    for s in range(0, len(data), batch_size):
        xb, yb = data.x[s : s + batch_size], data.y[s : s + batch_size]
        logits = module(xb)
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        if metrics:
            kept.append(logits.float())
    n = max(len(data), 1)
    out = {"loss": loss_sum / n, "accuracy": correct / n}
    if kept:
        out |= scores(torch.cat(kept).cpu().numpy(), data.y.cpu().numpy(), metrics)
    return out
