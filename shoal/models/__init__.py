"""Reference models from the federated learning literature.

Each factory takes the data's input shape and class count, so one config works on
28x28 MNIST, 8x8 digits or a table.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence

from torch import nn


class ModelName(enum.StrEnum):
    MCMAHAN_CNN = "mcmahan_cnn"
    MCMAHAN_2NN = "mcmahan_2nn"
    MLP = "mlp"


def mcmahan_cnn(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """The CNN of McMahan et al. 2017: conv5x5x32, pool, conv5x5x64, pool, fc512, fc10.

    1,663,370 parameters on 28x28 inputs ('same' padding, so 28 -> 14 -> 7).
    """
    channels, height, width = _image_shape(input_shape)
    flat = 64 * (height // 4) * (width // 4)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),  # [n, 64, H/4, W/4] -> [n, flat]
        nn.Linear(flat, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def mcmahan_2nn(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """The '2NN' of McMahan et al. 2017: two hidden layers of 200 ReLU units (199,210 params)."""
    return mlp(input_shape, num_classes, hidden=(200, 200))


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,)) -> nn.Module:
    """A plain multilayer perceptron over the flattened input; ``hidden=()`` is logistic regression."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ValueError(
            f"mcmahan_cnn needs [channels, height, width] images of at least 4x4, got {list(input_shape)}; "
            "use mlp for tabular data"
        )
    return input_shape[0], input_shape[1], input_shape[2]


ModelFactory = Callable[[], nn.Module]

__all__ = ["ModelFactory", "ModelName", "mcmahan_2nn", "mcmahan_cnn", "mlp"]
