"""Train a cohort of same-architecture clients at once: ``torch.func.vmap`` over stacked weights.

Each client keeps its own weights, optimizer state and batch order: the cohort's weights
are one ``[K, D]`` matrix whose rows are the clients' flat vectors, each step gathers one
minibatch per client from a padded ``[K, N_max, ...]`` copy of their data, and
``vmap(grad(loss))`` computes all K gradients in batched kernels. The batch orders come
from the same seeded generators as :class:`~shoal.client.trainer.TorchClient`, so the
result equals training the clients one by one up to floating-point summation order.

Ragged cohorts are handled by masking: a short last batch is padded with weight-0
samples, and a client that has finished its steps gets a zero update (its momentum buffer
untouched) while the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from shoal.client.algorithm import (
    GradientTerm,
    LocalRun,
    active_for,
    combined_term,
    finish_all,
    local_data,
    registered,
    start_params,
)
from shoal.client.app import finish_train
from shoal.client.hparams import TorchTrainer
from shoal.client.state import ClientState
from shoal.client.trainer import local_run
from shoal.config.names import OptimizerName
from shoal.data.datasets import ClientData, FederatedDataset
from shoal.errors import ConfigError
from shoal.messages import EvalResult, EvalTask, Failure, TrainResult, TrainTask
from shoal.models import ModelFactory
from shoal.params import ParamSpec, read_only_tensor
from shoal.runtime.backend import Backend, InProcessBackend
from shoal.runtime.dense_cohort import dense_plan, train_dense
from shoal.transforms.base import UpdateTransform
from shoal.transforms.downlink import received

# Layers whose forward is deterministic and free of running state: a cohort of these
# matches sequential training exactly (dropout would draw different masks; BatchNorm
# would update shared running statistics).
_PURE_LAYERS = (
    nn.Sequential,
    nn.Linear,
    nn.Conv2d,
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.GELU,
)


def cohort_supported(module: nn.Module, hparams: TorchTrainer) -> str | None:
    """None when a cohort can train this model exactly; otherwise the reason it cannot."""
    if hparams.optimizer is not OptimizerName.SGD:
        return f"the vectorized path implements SGD only, not {hparams.optimizer.value}"
    # algorithms the trainer's own settings turn on (a task turns on the others)
    probe = TrainTask(0, "probe", np.zeros(1, np.float32), 0)
    run = LocalRun(1, hparams.lr, hparams.batch_size, 1, hparams.optimizer.value, hparams.momentum, hparams)
    for a in registered():
        if a.active(probe, run) and (reason := a.cohort_unsupported()):
            return reason
    odd = sorted({type(m).__name__ for m in module.modules() if not isinstance(m, _PURE_LAYERS)})
    if odd:
        return f"layers {odd} are not known to be stateless and deterministic"
    return None


def cohorts_pay_off(module: nn.Module, hparams: TorchTrainer, clients_per_round: int) -> bool:
    """The ``backend = "auto"`` rule: vectorize dense models when rounds have many clients.

    Measured on 2 CPU cores (bench/w2_cohorts.py): many small dense clients gain several
    times; convolutions are already compute-bound per client and gain little.
    """
    dense = all(not isinstance(m, nn.Conv2d) for m in module.modules())
    return cohort_supported(module, hparams) is None and dense and clients_per_round >= 8


class CohortTrainer:
    """Trains up to ``cohort_size`` clients per call on stacked weights.

    Two paths with one result: a fused one for MLPs under plain SGD (batched matmuls, the
    update folded into the backward pass), and ``vmap(grad)`` for everything else.
    """

    def __init__(self, model: ModelFactory, hparams: TorchTrainer) -> None:
        self.module = model()
        reason = cohort_supported(self.module, hparams)
        if reason:
            raise ValueError(f"cannot vectorize this model: {reason}")
        self.hparams = hparams
        self.spec = ParamSpec.from_module(self.module)
        self._grad = vmap(grad_and_value(self._loss))
        plain_sgd = hparams.momentum == 0 and hparams.weight_decay == 0
        self._dense = dense_plan(self.module) if plain_sgd else None

    def _loss(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        # One client's weighted mean loss; weight-0 rows are padding.
        losses = F.cross_entropy(functional_call(self.module, params, (x,)), y, reduction="none")
        return (losses * w).sum() / w.sum().clamp_min(1.0)

    def _unstack(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[K, D] -> one contiguous [K, *shape] tensor per parameter (batched kernels update
        contiguous operands in place; strided views into [K, D] would be copied each step)."""
        return {
            name: t.clone(memory_format=torch.contiguous_format) for name, t in self.spec.split(flat).items()
        }

    def _schedule(
        self, tasks: Sequence[TrainTask], sizes: Sequence[int], steps: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch indices [S, K, B] and sample weights [S, K, B], in each client's seeded order.

        The same draws as TorchClient.train: one randperm per epoch from the client's
        generator, cut into batches of B (the last of an epoch may be short)."""
        batch = self.hparams.batch_size
        lanes = torch.arange(batch)
        plans = []
        for task, n, count in zip(tasks, sizes, steps, strict=True):
            per_epoch = math.ceil(n / batch)
            order = torch.Generator().manual_seed(task.seed)
            perms = torch.cat(
                [torch.randperm(n, generator=order) for _ in range(math.ceil(count / per_epoch))]
            )
            step = torch.arange(count)
            within = (step % per_epoch)[:, None] * batch + lanes  # position inside the epoch [count, B]
            pos = (step // per_epoch)[:, None] * n + within
            plans.append(torch.where(within < n, perms[pos.clamp(max=len(perms) - 1)], -1))
        idx = torch.full((max(steps), len(tasks), batch), -1, dtype=torch.int64)
        for k, plan in enumerate(plans):
            idx[: plan.shape[0], k, : plan.shape[1]] = plan
        valid = idx >= 0
        return idx.clamp_min(0), valid.float()

    def train(
        self,
        tasks: Sequence[TrainTask],
        data: Sequence[ClientData],
        states: Sequence[ClientState] | None = None,
    ) -> list[TrainResult]:
        """Train the cohort; ``states`` are the clients' working states (changed in place)."""
        k = len(tasks)
        states = list(states) if states is not None else [{} for _ in tasks]
        sizes = [len(d.train) for d in data]
        runs = [local_run(self.hparams, t.config, n, self.spec) for t, n in zip(tasks, sizes, strict=True)]
        algorithms = [active_for(t, run) for t, run in zip(tasks, runs, strict=True)]
        for a in {a for chosen in algorithms for a in chosen}:
            if reason := a.cohort_unsupported() or (a.local_loop() and "it replaces the local loop"):
                raise ValueError(f"the cohort path cannot run {a.name}: {reason}")
        data = [
            local_data(chosen, t, d, run, self.module, s)
            for chosen, t, d, run, s in zip(algorithms, tasks, data, runs, states, strict=True)
        ]
        claimed, sizes = sizes, [len(d.train) for d in data]  # what the hooks left to train on
        xs = torch.cat([d.train.x for d in data])  # [sum n, ...]: the cohort's samples, client after client
        ys = torch.cat([d.train.y for d in data])
        if self._dense is not None:
            xs = xs.reshape(len(xs), -1)  # the MLP's Flatten
        offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)[:, None]  # [K, 1]
        # updates are taken from the model each task sent (the anchor of every term); training
        # starts where the start hooks say (a client's personal layers over that model)
        anchor = self._rows([t.params for t in tasks])
        starts = [
            start_params(chosen, t, s, run)
            for chosen, t, s, run in zip(algorithms, tasks, states, runs, strict=True)
        ]
        start = (
            anchor if all(a is t.params for a, t in zip(starts, tasks, strict=True)) else self._rows(starts)
        )
        params = self._unstack(start.expand(k, -1))
        idx, wts = self._schedule(tasks, sizes, [r.steps for r in runs])
        lr = torch.tensor([r.lr for r in runs])
        terms = [
            combined_term(chosen, t, s, run)
            for chosen, t, s, run in zip(algorithms, tasks, states, runs, strict=True)
        ]
        extra = self._extra_gradient(params, anchor, terms)
        if self._dense is not None:
            names = self.spec.names  # (weight, bias) per Linear, in order
            loss_sum, seen = train_dense(
                self._dense,
                [params[n] for n in names[0::2]],
                [params[n] for n in names[1::2]],
                (xs, ys, idx + offsets),
                wts,
                lr,
                extra=(lambda: list(extra().values())) if extra else None,
            )
        else:
            loss_sum, seen = self._train_vmap(params, (xs, ys, idx + offsets), wts, lr, extra)
        delta = torch.cat([p.reshape(k, -1) for p in params.values()], dim=1).sub_(anchor).numpy()
        train_loss = (loss_sum / seen.clamp_min(1)).tolist()
        results = []
        for i, t in enumerate(tasks):
            # delta[i] is a row view: one [K, D] block serves the cohort
            out = finish_all(algorithms[i], t, states[i], delta[i], runs[i])
            metrics = {"train_loss": train_loss[i], "local_steps": runs[i].steps, **out.metrics}
            payload = {"delta": delta[i], **out.payload}
            results.append(TrainResult(t.round, t.client_id, claimed[i], payload, metrics))
        return results

    def _extra_gradient(
        self,
        params: dict[str, torch.Tensor],
        start: torch.Tensor,
        terms: Sequence[GradientTerm | None],
    ) -> Callable[[], dict[str, torch.Tensor]] | None:
        """The client algorithms' per-step terms, ``(coef + diag) (w - w_global) + shift`` per
        client, as TorchClient adds them; None when no client has one."""
        coef = torch.tensor([t.coef if t is not None else 0.0 for t in terms])
        shift = self._stacked([t.shift if t is not None else None for t in terms])
        diag = self._stacked([t.diag if t is not None else None for t in terms])
        prox = bool(coef.any())
        if not prox and shift is None and diag is None:
            return None
        anchor = self.spec.split(start)  # [*shape] when shared, else [K, *shape]

        def extra() -> dict[str, torch.Tensor]:
            out = {}
            for name, p in params.items():
                g = torch.zeros_like(p)
                if prox or diag is not None:
                    gap = p - anchor[name]
                    if prox:
                        g.add_(gap * coef.view((-1,) + (1,) * (p.dim() - 1)))
                    if diag is not None:
                        g.addcmul_(diag[name], gap)
                out[name] = g.add_(shift[name]) if shift is not None else g
            return out

        return extra

    @staticmethod
    def _rows(vectors: Sequence[np.ndarray]) -> torch.Tensor:
        """One vector as ``[D]`` when all are the same array (FedAvg sends one model to
        all), else the ``[K, D]`` stack."""
        if all(v is vectors[0] for v in vectors):
            return read_only_tensor(vectors[0])
        return torch.stack([read_only_tensor(v) for v in vectors])

    def _stacked(self, vectors: Sequence[np.ndarray | None]) -> dict[str, torch.Tensor] | None:
        """``[K, *shape]`` views of K clients' flat vectors (None: zero); None if all are."""
        if all(v is None for v in vectors):
            return None
        zero = np.zeros(self.spec.num_params, np.float32)
        return self.spec.split(torch.from_numpy(np.stack([zero if v is None else v for v in vectors])))

    def _train_vmap(
        self,
        params: dict[str, torch.Tensor],
        batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        sample_weights: torch.Tensor,
        lr: torch.Tensor,
        extra: Callable[[], dict[str, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step of a cohort through ``vmap(grad)``; the arguments as in ``train_dense``."""
        xs, ys, rows = batches
        k = rows.shape[1]
        momentum: dict[str, torch.Tensor] = {}
        loss_sum, seen = torch.zeros(k), torch.zeros(k)
        for s in range(rows.shape[0]):
            flat = rows[s].reshape(-1)  # [K * B] rows of xs
            xb = xs.index_select(0, flat).view(k, -1, *xs.shape[1:])  # [K, B, ...]
            yb, wb = ys.index_select(0, flat).view(k, -1), sample_weights[s]  # [K, B], [K, B]
            counts = wb.sum(1)  # [K]
            active = (counts > 0).float()
            grads, losses = self._grad(params, xb, yb, wb)
            if extra is not None:
                more = extra()
                grads = {name: g + more[name] for name, g in grads.items()}
            self._sgd_step(params, grads, momentum, lr * active, active, first=s == 0)
            loss_sum += losses.detach() * counts
            seen += counts
        return loss_sum, seen

    def _sgd_step(
        self,
        params: dict[str, torch.Tensor],
        grads: dict[str, torch.Tensor],
        momentum: dict[str, torch.Tensor],
        step_size: torch.Tensor,
        active: torch.Tensor,
        first: bool,
    ) -> None:
        """torch.optim.SGD's update, per client: d = g + wd p; b = mu b + d; p -= lr b."""
        hp = self.hparams
        with torch.no_grad():
            for name, p in params.items():
                shape = (-1,) + (1,) * (p.dim() - 1)
                d = grads[name]
                if hp.weight_decay:
                    d = d.add(p, alpha=hp.weight_decay)
                if hp.momentum:
                    if first:
                        momentum[name] = d.clone()
                    else:
                        keep = active.view(shape)
                        momentum[name] = torch.where(
                            keep > 0, momentum[name] * hp.momentum + d, momentum[name]
                        )
                    d = momentum[name]
                p.sub_(d * step_size.view(shape))


class VectorizedBackend(Backend):
    """A :class:`~shoal.runtime.backend.Backend` that trains clients in cohorts.

    ``cohort_size`` bounds memory: a cohort holds K copies of the weights, K momentum
    buffers and K clients' data (see the README's "Vectorized cohorts"). If a cohort fails
    as a whole (say, one client's data has the wrong shape), its clients are retrained one
    by one so the fault stays with the client that caused it.
    """

    def __init__(
        self,
        trainer: TorchTrainer,
        model: ModelFactory,
        data: FederatedDataset,
        transforms: Sequence[UpdateTransform] = (),
        run_seed: int = 0,
        cohort_size: int = 32,
    ) -> None:
        if cohort_size < 1:
            raise ConfigError(f"cohort_size must be >= 1, got {cohort_size}")
        self._cohort = CohortTrainer(model, trainer)
        self._sequential = InProcessBackend(trainer, model, data, transforms, run_seed)
        self._data, self._transforms, self._run_seed = data, list(transforms), run_seed
        self.cohort_size = cohort_size

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        out: list[TrainResult | Failure] = []
        for start in range(0, len(tasks), self.cohort_size):
            chunk = list(tasks[start : start + self.cohort_size])
            if any(t.client_id not in self._data.clients for t in chunk):
                out += self._sequential.train(chunk)
                continue
            store = self._sequential.client_states
            states = [store.get(t.client_id) for t in chunk]
            try:
                models = [received(t) for t in chunk]  # a compressed model is decoded on the device
                results = self._cohort.train(models, [self._data[t.client_id] for t in chunk], states)
            except Exception:
                out += self._sequential.train(chunk)
                continue
            for t, r, state in zip(models, results, states, strict=True):
                done = finish_train(t, r, self._transforms, self._run_seed, state)
                if isinstance(done, TrainResult):
                    store.stage(t.client_id, state)
                out.append(done)
        return out

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return self._sequential.evaluate(tasks)

    def commit(self, client_ids: Iterable[str]) -> None:
        self._sequential.commit(client_ids)

    def close(self) -> None:
        self._sequential.close()

    def state_dict(self) -> dict[str, Any]:
        return self._sequential.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sequential.load_state_dict(state)
