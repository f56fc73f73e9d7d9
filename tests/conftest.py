from __future__ import annotations

import functools

import pytest
import torch

from shoal.data import FederatedDataset, LabeledData, digits, iid
from shoal.models import ModelFactory, mlp

torch.set_num_threads(1)  # small models: threads only add noise and contention in CI


@pytest.fixture(scope="session")
def digits_data() -> LabeledData:
    return digits()


@pytest.fixture(scope="session")
def fed_digits(digits_data: LabeledData) -> FederatedDataset:
    return iid(digits_data, num_clients=20, seed=0, holdout_fraction=0.2)


@pytest.fixture(scope="session")
def small_mlp(fed_digits: FederatedDataset) -> ModelFactory:
    return functools.partial(mlp, fed_digits.input_shape, fed_digits.num_classes, (16,))
