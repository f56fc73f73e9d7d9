"""The two halves of a split model at work: what a device computes and what the server does.

Both use torch's autograd across the cut: the receiving side makes the tensor it got a leaf
that requires grad, and the sending side feeds the gradient that comes back into
``backward``. The chain rule then gives each part exactly the gradient it has in the unsplit
model. Optimizers are plain SGD: stateless, so device weights can be relayed between devices
or averaged without optimizer state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoal.params import FlatModule, read_only_tensor
from shoal.split.compute import FlopCount, Meter
from shoal.split.cut import CutShapes, SplitParts
from shoal.split.errors import Refusal


def _leaf(array: np.ndarray) -> torch.Tensor:
    """A tensor of a received array (copied: decoded arrays are read-only) that collects its gradient."""
    return read_only_tensor(array).clone().requires_grad_(True)


def _finite(tensors: Sequence[torch.Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


class DeviceHalf:
    """A device's part(s): the bottom (forward to the cut, then the cut gradient backward)
    and, U-shaped, the top (the head and the loss, on the server's output)."""

    def __init__(self, parts: SplitParts, shapes: CutShapes, input_shape: Sequence[int], lr: float) -> None:
        self.parts = parts
        self.flat = FlatModule(nn.ModuleList(parts.device_modules()))  # bottom's weights, then top's
        self.opt = torch.optim.SGD(self.flat.module.parameters(), lr=lr)
        self.meter = Meter()
        self._bottom_flops = FlopCount(parts.bottom, input_shape, input_grad=False, loss=False)
        self._top_flops = (
            FlopCount(parts.top, shapes.server_out, input_grad=True, loss=True)
            if parts.top is not None and shapes.server_out is not None
            else None
        )
        self._pending: torch.Tensor | None = None  # the bottom's output, its graph kept for backward

    def load(self, weights: np.ndarray) -> None:
        self.flat.load(weights)

    def weights(self) -> np.ndarray:
        return self.flat.numpy()

    def forward(
        self, x: torch.Tensor, noise_std: float = 0.0, noise: torch.Generator | None = None
    ) -> np.ndarray:
        """The bottom's output on ``x`` as sent: plus N(0, noise_std^2) noise if asked.
        The noise is additive, so the gradient the server returns for the noisy tensor is
        also the gradient of the clean one."""
        with self.meter.timed():
            self.opt.zero_grad(set_to_none=True)
            self.parts.bottom.train()
            out = self.parts.bottom(x)
            sent = out.detach()
            if noise_std > 0:
                sent = sent + noise_std * torch.randn(sent.shape, generator=noise, dtype=sent.dtype)
            self._pending = out
        self.meter.flops += self._bottom_flops(x.shape[0])
        return np.ascontiguousarray(sent.numpy(), dtype=np.float32)

    def head(self, server_out: np.ndarray, y: torch.Tensor) -> tuple[np.ndarray, float]:
        """U-shaped: the top and the loss on the server's output; returns d loss / d output."""
        if self.parts.top is None or self._top_flops is None:
            raise Refusal("the server sent an output for a head this device does not have (vanilla split)")
        with self.meter.timed():
            s = _leaf(server_out)
            self.parts.top.train()
            loss = F.cross_entropy(self.parts.top(s), y)
            loss.backward()  # type: ignore[no-untyped-call]
        self.meter.flops += self._top_flops(y.shape[0])
        assert s.grad is not None  # s is a leaf on the loss's graph
        return s.grad.numpy(), float(loss.detach())

    def backward(self, grad: np.ndarray) -> None:
        """Finish the batch: the cut gradient through the bottom, then one SGD step on every
        device weight (the top's gradients are already in place when U-shaped)."""
        if self._pending is None:
            raise Refusal("a gradient arrived for no batch in flight")
        with self.meter.timed():
            self._pending.backward(read_only_tensor(grad))  # type: ignore[no-untyped-call]
            self._pending = None
            self.opt.step()


class ServerHalf:
    """The server's part (the middle): it trains on a device's activations and returns the
    gradient at the cut. A step whose loss or gradients are not finite is refused before
    any weight moves, so finite but hostile activations cannot poison the part."""

    def __init__(
        self,
        middle: nn.Sequential,
        shapes: CutShapes,
        lr: float,
        meter: Meter,
        flops: FlopCount | None = None,
    ) -> None:
        self.middle = middle
        self.flat = FlatModule(middle)
        self.opt = torch.optim.SGD(middle.parameters(), lr=lr)
        self.meter = meter
        self.u_shaped = shapes.server_out is not None
        # copies of one part share a counter: its FLOPs depend only on the layers and the batch size
        self.flops = flops or FlopCount(middle, shapes.cut, input_grad=True, loss=not self.u_shaped)
        self._open: tuple[torch.Tensor, torch.Tensor] | None = None  # U-shaped: (input leaf, output)

    def train_step(self, activations: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
        """Vanilla: forward, loss with the device's labels, backward, step; d loss / d input."""
        with self.meter.timed():
            self.opt.zero_grad(set_to_none=True)
            a = _leaf(activations)
            self.middle.train()
            loss = F.cross_entropy(self.middle(a), read_only_tensor(labels))
            loss.backward()  # type: ignore[no-untyped-call]
            self._step_if_finite(a, loss)
        self.meter.flops += self.flops(activations.shape[0])
        assert a.grad is not None
        return a.grad.numpy(), float(loss.detach())

    def forward(self, activations: np.ndarray) -> np.ndarray:
        """U-shaped: the middle's output, its graph kept until the output gradients come."""
        with self.meter.timed():
            self.opt.zero_grad(set_to_none=True)
            a = _leaf(activations)
            self.middle.train()
            out = self.middle(a)
            if not _finite([out]):
                raise Refusal("these activations drive the server's part to NaN or infinity")
            self._open = (a, out)
        return np.ascontiguousarray(out.detach().numpy(), dtype=np.float32)

    def backward(self, output_grad: np.ndarray) -> np.ndarray:
        """U-shaped: the device's gradient through the middle, a step; d loss / d input."""
        if self._open is None:
            raise Refusal("output gradients for no batch in flight")
        a, out = self._open
        self._open = None
        with self.meter.timed():
            out.backward(read_only_tensor(output_grad))  # type: ignore[no-untyped-call]
            self._step_if_finite(a, None)
        self.meter.flops += self.flops(a.shape[0])
        assert a.grad is not None
        return a.grad.numpy()

    def _step_if_finite(self, a: torch.Tensor, loss: torch.Tensor | None) -> None:
        grads = [a.grad, *(p.grad for p in self.middle.parameters())]
        if not _finite([loss, *grads]):
            self.opt.zero_grad(set_to_none=True)
            raise Refusal("this batch drives the server's loss or gradients to NaN or infinity")
        self.opt.step()
