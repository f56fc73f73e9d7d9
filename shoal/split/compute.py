"""What a part of the model costs to train: FLOPs counted by torch, and time measured.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` over one forward and
backward pass of a private copy of the part (so the real part's gradients are untouched),
once per batch size: they depend on nothing else. The counter counts matrix products and
convolutions (what dominates), not elementwise operations. Time is the wall clock of the
real passes, measured where they run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class FlopCount:
    """Forward-plus-backward FLOPs of ``module`` on a batch of ``n`` examples of ``in_shape``.

    ``input_grad``: whether the pass also computes the gradient of its input (a server part
    and a device top do; the device bottom, fed with data, does not). ``loss``: whether the
    cross-entropy is part of the pass (it is where the labels are)."""

    def __init__(self, module: nn.Module, in_shape: Sequence[int], input_grad: bool, loss: bool) -> None:
        self.module = copy.deepcopy(module)
        self.in_shape, self.input_grad, self.loss = tuple(in_shape), input_grad, loss
        self._cache: dict[int, int] = {}

    def __call__(self, n: int) -> int:
        if n not in self._cache:
            self._cache[n] = self._count(n)
        return self._cache[n]

    def _count(self, n: int) -> int:
        x = torch.zeros(n, *self.in_shape, requires_grad=self.input_grad)
        with FlopCounterMode(display=False) as counter:
            out = self.module(x)
            if self.loss:
                F.cross_entropy(out, torch.zeros(n, dtype=torch.long)).backward()  # type: ignore[no-untyped-call]
            else:
                out.backward(torch.ones_like(out))
        self.module.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


@dataclass
class Meter:
    """Compute spent by one side: seconds measured and FLOPs counted."""

    seconds: float = 0.0
    flops: int = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def take(self) -> tuple[float, int]:
        """Seconds and FLOPs since the last take, and reset."""
        out = (self.seconds, self.flops)
        self.seconds, self.flops = 0.0, 0
        return out
