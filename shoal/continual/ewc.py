"""Elastic weight consolidation (Kirkpatrick et al. 2017) on the device.

EWC adds ``(lambda / 2) sum_i F_i (w_i - w_old_i)^2`` to the loss of a new task (their
eq. 3): ``w_old`` is where the model was after the earlier tasks and ``F`` the diagonal of
the Fisher information there, how much each weight mattered to them. Its gradient,
``lambda F (w - w_old)``, is affine in ``w``, so it is a client-algorithm
:class:`~shoal.client.algorithm.GradientTerm`: ``diag = lambda F`` about the task's model
``w_global``, plus the shift ``lambda F (w_global - w_old)``; both trainers apply it as they
apply FedProx's. SGD applies it explicitly, so each coordinate's ``lambda F`` is capped
at ``1 / lr`` (a larger one overshoots ``w_old`` every step, and diverges beyond ``2 / lr``).

Where the Fisher comes from. A client cannot know which of its rounds is the last of a
stage (it may not be picked again), so every time it trains it estimates the empirical
Fisher (the mean squared per-example gradient, ``torch.func.vmap`` over ``grad``) of the
task's model on its current data and keeps it, with that model, as *pending*. The first
time it trains in a later stage (stage boundaries: ``[continual] drift_rounds``, the
drift schedule's), the pending pair is consolidated: ``F <- decay F + F_pending``
(``decay = 1``: EWC's sum of per-task penalties; below 1, the online EWC of Schwarz et al.
2018), ``w_old <- w_pending``. The model it is taken at is the server's, not the client's
own trained weights: after averaging, the global model is what the old stage taught.

State: ``ewc_fisher`` and ``ewc_anchor`` (consolidated), ``ewc_pending_fisher``,
``ewc_pending_anchor`` and ``ewc_pending_stage``. The estimate is taken in ``local_data``,
which sees the device's data, its state and the trainer's module.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from shoal.client.algorithm import ClientAlgorithm, GradientTerm, LocalRun, register
from shoal.client.state import ClientState
from shoal.continual.config import settings
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.messages import TrainTask
from shoal.params import ParamSpec

FISHER, ANCHOR = "ewc_fisher", "ewc_anchor"
PENDING_FISHER, PENDING_ANCHOR, PENDING_STAGE = (
    "ewc_pending_fisher",
    "ewc_pending_anchor",
    "ewc_pending_stage",
)
# Per-example gradients per estimate: the diagonal is a mean over examples, and a few
# hundred keep its relative error near 1/sqrt(256) while costing about one local epoch.
FISHER_EXAMPLES = 256
_CHUNK = 64  # per-example gradients held at once: 64 x the model's size in floats


Squares = dict[str, torch.Tensor]  # parameter name -> summed squared per-example gradients


def empirical_fisher(
    module: nn.Module, weights: np.ndarray, data: ArrayDataset, limit: int = FISHER_EXAMPLES, seed: int = 0
) -> np.ndarray:
    """The diagonal empirical Fisher of the cross-entropy at ``weights`` (a flat vector in
    ``module``'s layout), over at most ``limit`` examples of ``data`` chosen by ``seed``:
    ``F_i = mean_n (d loss_n / d w_i)^2``. Floating buffers (running statistics) get 0."""
    spec = ParamSpec.from_module(module)
    values = spec.split(torch.from_numpy(np.array(weights, np.float32)))
    trainable = {name for name, _ in module.named_parameters()}
    params = {k: v for k, v in values.items() if k in trainable}
    fixed = {k: v for k, v in values.items() if k not in trainable}
    chosen = torch.from_numpy(np.random.default_rng(seed).permutation(len(data))[:limit])
    was = module.training
    module.eval()  # dropout off, running statistics not updated: the model as it is
    try:
        total = _linear_squares(module, params, fixed, data.x[chosen], data.y[chosen])
        if total is None:
            total = _vmap_squares(module, params, fixed, data.x[chosen], data.y[chosen])
    finally:
        module.train(was)
    n = max(len(chosen), 1)
    return torch.cat(
        [(total[k] / n).reshape(-1) if k in total else torch.zeros(v.numel()) for k, v in values.items()]
    ).numpy()


def _vmap_squares(
    module: nn.Module, params: Squares, fixed: Squares, x: torch.Tensor, y: torch.Tensor
) -> Squares:
    """Per-example gradients by ``vmap(grad)``, any model, ``_CHUNK`` examples at a time."""

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(module, {**p, **fixed}, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, len(y), _CHUNK):
        for k, g in per_example(params, x[start : start + _CHUNK], y[start : start + _CHUNK]).items():
            total[k] += g.square().sum(0)
    return total


def _linear_squares(
    module: nn.Module, params: Squares, fixed: Squares, x: torch.Tensor, y: torch.Tensor
) -> Squares | None:
    """The same sums in one backward pass when every weight is in a Linear layer applied
    once per example to a flat input (an MLP): there the per-example gradient is the outer
    product ``dz_n a_n^T``, so its square sums to ``(dz^2)^T (a^2)`` (the trick of Goodfellow
    2015, "Efficient per-example gradient computations"). None when the model is not so."""
    linears = {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    owned = {f"{n}.weight" for n in linears} | {f"{n}.bias" for n, m in linears.items() if m.bias is not None}
    if not linears or owned != set(params):
        return None
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in linears}
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in linears}

    def keep(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            inputs[name].append(args[0])
            outputs[name].append(out)

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in linears.items()]
    try:
        live = {k: v.detach().requires_grad_() for k, v in params.items()}
        logits = functional_call(module, {**live, **fixed}, (x,))
    finally:
        for h in handles:
            h.remove()
    if any(len(v) != 1 or v[0].dim() != 2 for v in inputs.values()):
        return None  # a layer used twice, or over a sequence: the outer-product form does not hold
    # summed, not mean, loss: d(sum)/dz_n is example n's own gradient
    dzs = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), [outputs[n][0] for n in linears])
    total: Squares = {}
    for (name, layer), dz in zip(linears.items(), dzs, strict=True):
        dz2 = dz.detach().square()
        total[f"{name}.weight"] = dz2.T @ inputs[name][0].detach().square()
        if layer.bias is not None:
            total[f"{name}.bias"] = dz2.sum(0)
    return total


def ewc_term(
    fisher: np.ndarray, anchor: np.ndarray, w_global: np.ndarray, lam: float, lr: float | None = None
) -> GradientTerm:
    """``lambda F (w - w_old)`` as a term about ``w_global``: ``(lambda F) (w - w_global)``
    plus the constant ``lambda F (w_global - w_old)``.

    With ``lr``, each coordinate's ``lambda F`` is capped at ``1 / lr``: SGD applies the
    penalty explicitly, and a step of ``lr lambda F > 1`` overshoots ``w_old`` (beyond 2 it
    diverges); at the cap one step on the penalty alone lands on ``w_old``."""
    diag = lam * fisher if lr is None else np.minimum(lam * fisher, 1.0 / lr)
    diag = diag.astype(np.float32)
    return GradientTerm(diag=diag, shift=(diag * (w_global - anchor)).astype(np.float32))


def stage_of(round: int, boundaries: Sequence[int]) -> int:
    return bisect.bisect_right(tuple(boundaries), round)


def consolidate(state: ClientState, stage: int, decay: float) -> None:
    """Fold a pending estimate from an earlier stage into the penalty (in place)."""
    if PENDING_STAGE not in state or int(state[PENDING_STAGE][0]) >= stage:
        return
    pending = state.pop(PENDING_FISHER)
    old = state.get(FISHER)
    state[FISHER] = pending if old is None else (decay * old + pending).astype(np.float32)
    state[ANCHOR] = state.pop(PENDING_ANCHOR)
    del state[PENDING_STAGE]


class ElasticWeights(ClientAlgorithm):
    """EWC's penalty toward the model of earlier stages (the trainer's ``ewc_lambda``)."""

    name: ClassVar[str] = "ewc"

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return settings(run.trainer).ewc_lambda > 0

    def local_data(
        self,
        task: TrainTask,
        data: ClientData,
        run: LocalRun,
        classes: Callable[[], int],
        state: ClientState,
        module: nn.Module,
    ) -> ClientData:
        """Consolidate a pending estimate from an earlier stage, then estimate this stage's
        Fisher at the task's model; the data itself is unchanged."""
        cfg = settings(run.trainer)  # its drift_rounds are the stage boundaries (the config requires them)
        stage = stage_of(task.round, cfg.drift_rounds)
        consolidate(state, stage, cfg.ewc_decay)
        state[PENDING_FISHER] = empirical_fisher(module, task.params, data.train, seed=task.seed)
        state[PENDING_ANCHOR] = np.array(task.params, np.float32)
        state[PENDING_STAGE] = np.array([stage], np.int64)
        return data

    def gradient_term(self, task: TrainTask, state: ClientState, run: LocalRun) -> GradientTerm | None:
        if FISHER not in state:
            return None  # nothing consolidated yet: the first stage trains freely
        return ewc_term(state[FISHER], state[ANCHOR], task.params, settings(run.trainer).ewc_lambda, run.lr)


register(ElasticWeights())
