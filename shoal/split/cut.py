"""Cutting a sequential model into the parts a device and a server train.

Vanilla split learning (Gupta & Raskar 2018) cuts once: the device runs layers
``[0, cut)``, the server ``[cut, end)`` and the loss, so the labels travel. The U-shaped
configuration (Vepakomma et al. 2018) cuts twice: the device keeps the first layers and
the last ones (the head and the loss), so neither labels nor logits leave it.

Every part must hold weights: a device part without any would send the raw input (or
receive the logits) and is refused, as is a server part with nothing to train.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shoal.errors import ConfigError


@dataclass(frozen=True)
class SplitParts:
    """The pieces of one model: ``bottom`` (device), ``middle`` (server) and, when
    U-shaped, ``top`` (device again). Running them in order is the unsplit model."""

    bottom: nn.Sequential
    middle: nn.Sequential
    top: nn.Sequential | None = None

    @property
    def u_shaped(self) -> bool:
        return self.top is not None

    def device_modules(self) -> list[nn.Sequential]:
        """What the device trains, in the order its weights are flattened."""
        return [self.bottom] if self.top is None else [self.bottom, self.top]

    def whole(self) -> nn.Sequential:
        """The unsplit model, sharing these parts' parameters (for evaluation)."""
        return nn.Sequential(*self.bottom, *self.middle, *(self.top or ()))


@dataclass(frozen=True)
class CutShapes:
    """Per-example shapes at the cuts, which bound every tensor that travels."""

    cut: tuple[int, ...]  # what the device sends (the bottom's output)
    server_out: tuple[int, ...] | None  # U-shaped: what the server sends back (the middle's output)
    logits: tuple[int, ...]  # the model's output, [num_classes]


def check_cuts(model: nn.Module, cuts: Sequence[int]) -> tuple[int, ...]:
    """``cuts`` as a tuple if ``model`` can be cut there; a ConfigError naming the rule if not."""
    if not isinstance(model, nn.Sequential):
        raise ConfigError(
            f"split learning cuts an nn.Sequential between its layers; got {type(model).__name__}. "
            "Write the model as nn.Sequential (the reference models mlp, mcmahan_2nn and mcmahan_cnn are)"
        )
    cuts = tuple(cuts)
    n = len(model)
    if len(cuts) not in (1, 2) or not all(type(c) is int for c in cuts):
        raise ConfigError(f"cuts must be one layer index (vanilla) or two (U-shaped); got {list(cuts)}")
    if any(c < 1 or c >= n for c in cuts) or list(cuts) != sorted(set(cuts)):
        raise ConfigError(
            f"cuts {list(cuts)} do not split this {n}-layer model: each must be in 1..{n - 1}, "
            "and two cuts must increase"
        )
    return cuts


def cut_model(model: nn.Module, cuts: Sequence[int]) -> SplitParts:
    """Cut ``model`` before the layers ``cuts`` name; the parts share the model's layers."""
    cuts = check_cuts(model, cuts)
    assert isinstance(model, nn.Sequential)  # check_cuts refused anything else
    layers = list(model)
    bounds = [0, *cuts, len(layers)]
    pieces = [nn.Sequential(*layers[a:b]) for a, b in itertools.pairwise(bounds)]
    names = ["the device's bottom part", "the server's part", "the device's top part"]
    for piece, name, (a, b) in zip(pieces, names, itertools.pairwise(bounds), strict=False):
        if not any(True for _ in piece.parameters()):
            raise ConfigError(
                f"{name} (layers {a}..{b - 1}) would hold no weights: move the cut "
                "(a weightless device part would send the raw input or receive the logits)"
            )
    return SplitParts(pieces[0], pieces[1], pieces[2] if len(pieces) == 3 else None)


def cut_shapes(parts: SplitParts, input_shape: Sequence[int]) -> CutShapes:
    """The per-example shapes at each cut, from one forward pass of a zero example."""
    with torch.no_grad():
        was = [m.training for m in (parts.bottom, parts.middle, parts.top) if m is not None]
        for m in (parts.bottom, parts.middle, parts.top):
            if m is not None:
                m.eval()
        try:
            a = parts.bottom(torch.zeros(1, *input_shape))
            s = parts.middle(a)
            out = parts.top(s) if parts.top is not None else s
        finally:
            for m, flag in zip([m for m in (parts.bottom, parts.middle, parts.top) if m is not None], was,
                               strict=True):  # fmt: skip
                m.train(flag)
    return CutShapes(
        tuple(a.shape[1:]), tuple(s.shape[1:]) if parts.top is not None else None, tuple(out.shape[1:])
    )
