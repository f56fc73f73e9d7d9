"""What one example of local training costs, in floating-point operations.

Counted, not guessed: one forward and backward pass of a real batch through the model
under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix
multiplications and convolutions that dominate training (element-wise work and the
optimizer step are left out, as in the FLOP figures of the FL literature).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from shoal.data.datasets import ArrayDataset
from shoal.models import ModelFactory


def train_flops_per_example(model: ModelFactory, sample: ArrayDataset, batch: int = 4) -> float:
    """FLOPs of one training step per example, measured on up to ``batch`` examples."""
    n = min(batch, len(sample))
    if n == 0:
        raise ValueError("need at least one example to count a model's training FLOPs")
    module = model()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = F.cross_entropy(module(sample.x[:n]), sample.y[:n])
        loss.backward()  # type: ignore[no-untyped-call]
    return float(counter.get_total_flops()) / n
