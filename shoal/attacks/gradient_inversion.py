"""Gradient inversion: Deep Leakage from Gradients (Zhu et al. 2019), with iDLG's label trick.

A client that trains one step on one example sends ``delta = -lr * grad``: the gradient of
that example's loss. The attacker, who knows the model, starts from a random image and
moves it (L-BFGS) until the gradient it produces matches the observed one; for small
networks the match pins down the private image almost exactly. The label comes first and
for free (Zhao et al. 2020, iDLG): with cross-entropy and a single example, the last
layer's bias gradient is ``softmax - onehot``, negative only at the true class.

Defences change what the attacker observes: a clipped, noised update (DP) matches many
images, and the reconstruction degrades to noise. :func:`psnr` measures how close it got.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoal.params import ParamSpec


def small_cnn(num_classes: int = 10, channels: int = 1, side: int = 8) -> nn.Module:
    """The DLG paper's style of network, sized for 8x8 digits: two sigmoid convolutions and a
    linear head (sigmoid, as in the paper, keeps the gradient map smooth and invertible)."""
    return nn.Sequential(
        nn.Conv2d(channels, 12, 5, padding=2),
        nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=2),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(12 * (side // 2) ** 2, num_classes),
    )


@dataclass(frozen=True)
class InversionResult:
    image: torch.Tensor  # the reconstruction, [1, *input_shape]
    label: int  # the label recovered from the last layer's bias gradient
    gradient_distance: float  # how well the final guess explains the observed gradient


def psnr(reconstruction: torch.Tensor, original: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (higher: closer; identical images give infinity)."""
    mse = float(F.mse_loss(reconstruction.clamp(0, data_range), original))
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(data_range**2 / mse)).item()


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> list[torch.Tensor]:
    loss = F.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))


def example_gradient(model: nn.Module, x: torch.Tensor, y: int) -> list[torch.Tensor]:
    """What a one-example, one-step client update reveals (``-delta / lr``)."""
    return [g.detach() for g in _grads(model, x, torch.tensor([y]), create_graph=False)]


def gradient_from_update(model: nn.Module, delta: np.ndarray, lr: float) -> list[torch.Tensor]:
    """Per-parameter gradients from a one-step SGD update: ``grad = -delta / lr``."""
    flat = torch.from_numpy(np.asarray(delta, dtype=np.float32)) / -lr
    by_name = ParamSpec.from_module(model).split(flat)
    return [by_name[name].clone() for name, _ in model.named_parameters()]


def invert_gradient(
    model: nn.Module,
    observed: list[torch.Tensor],
    input_shape: tuple[int, ...],
    steps: int = 60,
    seed: int = 0,
) -> InversionResult:
    """Reconstruct the single example behind ``observed`` (per-parameter gradients, in
    ``model.parameters()`` order; the last one is the output layer's bias)."""
    label = int(torch.argmin(observed[-1]))
    y = torch.tensor([label])
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand((1, *input_shape), generator=generator).requires_grad_(True)
    opt = torch.optim.LBFGS([dummy], lr=1.0, max_iter=20, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        guess = _grads(model, dummy, y, create_graph=True)
        distance = sum(((g - o) ** 2).sum() for g, o in zip(guess, observed, strict=True))
        assert isinstance(distance, torch.Tensor)
        distance.backward()  # type: ignore[no-untyped-call]
        return distance

    for _ in range(steps // 20 or 1):
        opt.step(closure)  # type: ignore[no-untyped-call]
    final = float(closure().detach())
    return InversionResult(dummy.detach().clone(), label, final)
