"""Small models and data for split learning: a digits MLP and a tiny CNN, both Sequential."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from shoal.data import ArrayDataset, FederatedDataset, LabeledData, iid
from shoal.data.datasets import ClientData
from shoal.models import ModelFactory, mcmahan_cnn, mlp


@pytest.fixture(scope="session")
def fed4(digits_data: LabeledData) -> FederatedDataset:
    return iid(digits_data, num_clients=4, seed=0)


@pytest.fixture(scope="session")
def small_mlp_factory(fed4: FederatedDataset) -> ModelFactory:
    # layers: 0 Flatten, 1 Linear, 2 ReLU, 3 Linear, 4 ReLU, 5 Linear
    return functools.partial(mlp, fed4.input_shape, fed4.num_classes, (16, 16))


def one_client(data: LabeledData, n: int) -> FederatedDataset:
    """The first ``n`` training examples held by a single client, with the test set."""
    train = ArrayDataset(data.train.x[:n].contiguous(), data.train.y[:n].contiguous())
    return FederatedDataset("one", {"0": ClientData(train)}, data.num_classes, data.input_shape, data.test)


def tiny_cnn() -> nn.Module:
    """McMahan's CNN on 8x8 digits images (1x8x8): conv, relu, pool, conv, ... (10 layers)."""
    return mcmahan_cnn((1, 8, 8), 10)


def seeded(factory: ModelFactory, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()
