"""Fused cohort training for MLPs under plain SGD.

For ``Sequential([Flatten], Linear, [ReLU], ..., Linear)`` the cohort's forward and
backward passes are batched matmuls over ``[K, ...]`` weights, and each SGD update is folded
into the backward pass (``w.baddbmm_(dz^T, a, alpha=-1)`` with the learning rate already
in ``dz``): no autograd graph and no gradient tensors.

The first layer, which holds most of the weights (157k of the 2NN's 199k), gets one more
trick. Within a window of T steps its weights change only by rank-B terms,
``W_j = W_0 - sum_{t<j} dZ_t^T X_t``, and its inputs X are data known in advance. So

    Z_j = X_j W_j^T = X_j W_0^T - sum_{t<j} (X_j X_t^T) dZ_t

and the window needs one GEMM ``X W_0^T`` over all T x B rows, a small Gram matrix
``X X^T`` for the corrections, and one update ``W -= dZ^T X`` at its end: two passes over
the big matrix per window instead of three per step. The result is the same SGD
trajectory, up to floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def dense_plan(module: nn.Module) -> list[bool] | None:
    """For ``Sequential([Flatten], Linear, [ReLU], ..., Linear)``: each Linear's "ReLU follows"
    flag, in order; None for any other architecture."""
    if not isinstance(module, nn.Sequential):
        return None
    layers = list(module.children())
    if layers and isinstance(layers[0], nn.Flatten):
        layers = layers[1:]
    plan: list[bool] = []
    i = 0
    while i < len(layers):
        if not isinstance(layers[i], nn.Linear) or layers[i].bias is None:
            return None
        relu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU)
        plan.append(relu)
        i += 2 if relu else 1
    return plan or None


@torch.no_grad()
def train_dense(
    plan: list[bool],
    weight: list[torch.Tensor],
    bias: list[torch.Tensor],
    batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    sample_weights: torch.Tensor,
    lr: torch.Tensor,
    window_rows: int = 128,
    extra: Callable[[], Sequence[torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every step of a cohort in place on ``weight`` [K, out, in] and ``bias`` [K, out].

    ``batches`` = (xs [N, F], ys [N], rows [S, K, B]): the cohort's samples and, per step
    and client, which of them form its batch. ``sample_weights`` [S, K, B] is 0 for padding
    and for clients that have finished. ``extra``, when given, returns a gradient term per
    parameter (w_1, b_1, w_2, ...) at the current weights, added to every step (FedProx's
    proximal pull, SCAFFOLD's correction); the window trick needs the first layer's updates
    to be data terms only, so each window is then one step. Returns each client's loss sum
    and sample count.
    """
    xs, ys, rows = batches
    steps, k, b = rows.shape
    span = 1 if extra else max(1, window_rows // b)  # steps per window: T x B rows in the first GEMM
    loss_sum, seen = torch.zeros(k), torch.zeros(k)
    for w0 in range(0, steps, span):
        n = min(span, steps - w0)
        flat = rows[w0 : w0 + n].permute(1, 0, 2).reshape(-1)  # [K * n * B], client-major
        xw = xs.index_select(0, flat).view(k, n * b, -1)  # [K, nB, F]
        yw = ys.index_select(0, flat).view(k, n, b)
        sw = sample_weights[w0 : w0 + n].permute(1, 0, 2)  # [K, n, B]
        base = torch.bmm(xw, weight[0].transpose(1, 2))  # [K, nB, H]: X W_0^T for the window
        gram = torch.bmm(xw, xw.transpose(1, 2))  # [K, nB, nB]
        dz1 = torch.zeros_like(base)
        terms = extra() if extra else None  # at this step's weights, before its update
        for j in range(n):
            rows_j = slice(j * b, (j + 1) * b)
            counts = sw[:, j].sum(1)  # [K]
            z1 = base[:, rows_j] + bias[0].unsqueeze(1)
            if j:  # the first layer's updates so far in this window, applied to this batch
                z1 = torch.baddbmm(z1, gram[:, rows_j, : j * b], dz1[:, : j * b], alpha=-1.0)
            scale = sw[:, j] / counts.clamp_min(1)[:, None]
            losses, dz1[:, rows_j] = _upper_layers(plan, weight, bias, z1, yw[:, j], scale, lr)
            bias[0].sub_(dz1[:, rows_j].sum(1))
            loss_sum += losses * counts
            seen += counts
        weight[0].baddbmm_(dz1.transpose(1, 2), xw, alpha=-1.0)  # W_0 -= sum_t dZ_t^T X_t
        if terms is not None:
            step = lr * (sw[:, 0].sum(1) > 0)  # [K]: 0 for clients already finished
            layers = [p for pair in zip(weight, bias, strict=True) for p in pair]
            for p, g in zip(layers, terms, strict=True):
                p.sub_(g * step.view((-1,) + (1,) * (p.dim() - 1)))
    return loss_sum, seen


def _upper_layers(
    plan: list[bool],
    weight: list[torch.Tensor],
    bias: list[torch.Tensor],
    z1: torch.Tensor,
    y: torch.Tensor,
    scale: torch.Tensor,
    lr: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward from the first layer's output, backward with in-place updates of layers 2..L.

    Returns each client's weighted mean loss [K] and lr x d(loss)/d(z1) [K, B, H]."""
    pre, inputs = [z1], []
    a = z1.clamp_min(0) if plan[0] else z1
    for layer in range(1, len(plan)):
        inputs.append(a)
        z = torch.baddbmm(bias[layer].unsqueeze(1), a, weight[layer].transpose(1, 2))  # [K, B, out]
        pre.append(z)
        a = z.clamp_min(0) if plan[layer] else z
    logp = torch.log_softmax(a, dim=2)
    nll = -logp.gather(2, y.unsqueeze(2)).squeeze(2)  # [K, B]
    losses = (nll * scale).sum(1)
    # d(mean loss)/d(logits) = (softmax - onehot) * scale, times the client's lr: the lr then
    # rides through every layer's gradient, so the updates need no extra pass.
    dz = logp.exp_()
    dz.scatter_add_(2, y.unsqueeze(2), -torch.ones_like(nll).unsqueeze(2))
    dz.mul_((scale * lr[:, None]).unsqueeze(2))
    for layer in range(len(plan) - 1, 0, -1):
        da = torch.bmm(dz, weight[layer])  # [K, B, in], with the weights before this update
        weight[layer].baddbmm_(dz.transpose(1, 2), inputs[layer - 1], alpha=-1.0)
        bias[layer].sub_(dz.sum(1))
        dz = da.mul_(pre[layer - 1] > 0) if plan[layer - 1] else da
    return losses, dz
