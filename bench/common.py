"""What the benchmarks share: the data, and the plain PyTorch loop they are measured against."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from shoal.data import ArrayDataset, LabeledData, fashion_mnist, fashion_mnist_available


def fmnist_or_random() -> LabeledData:
    """Fashion-MNIST's train set, or random images of its shape (overhead does not depend on pixels)."""
    if fashion_mnist_available():
        return fashion_mnist()
    print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using random images")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60000, 1, 28, 28, generator=g)
    return LabeledData("random", ArrayDataset(x, torch.randint(0, 10, (60000,), generator=g)), None, 10)


def plain_loop(
    model_factory: Callable[[], nn.Module],
    data: LabeledData,
    blocks: int,
    samples: int,
    batch: int,
    lr: float,
    seed: int,
) -> float:
    """The floor: one model, plain SGD over ``blocks`` blocks of ``samples`` consecutive samples,
    each shuffled and cut into batches: the same sample-steps and batch shapes as the
    federated run, without anything federated. Returns seconds."""
    torch.manual_seed(seed)
    model = model_factory()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for block in range(blocks):
        base = torch.randperm(samples, generator=g) + block * samples
        for s in range(0, samples, batch):
            idx = base[s : s + batch]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - start
