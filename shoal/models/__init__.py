"""Reference models from the federated learning literature.

Each factory takes the data's input shape and class count, so one config works on
28x28 MNIST, 8x8 digits or a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from shoal.config.names import ModelName
from shoal.errors import ConfigError


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


def cnn_bn(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A small CNN with batch norm after every hidden layer, the kind FedBN is defined on
    (Li et al. 2021): conv5x5x16, BN, pool, conv5x5x32, BN, pool, fc128, BN, fc.

    215,722 parameters on 28x28 inputs, and 352 batch-norm statistics."""
    channels, height, width = _image_shape(input_shape)
    flat = 32 * (height // 4) * (width // 4)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 5, padding=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
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


def sensor_cnn(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (16, 32)) -> nn.Module:
    """A small 1-D CNN over ``[channels, steps]`` windows (IMU axes over time): one
    conv5 + ReLU per width in ``hidden``, a max-pool of 3 after the first, then the mean
    over time and a linear head. The global mean makes it indifferent to when in the
    window an event happens. 3,319 parameters on 6 x 75 windows with (16, 32)."""
    if len(input_shape) != 2 or not hidden:
        raise ConfigError(
            "model.name = 'sensor_cnn' needs [channels, steps] windows and at least one width in "
            f"model.hidden; got input shape {list(input_shape)} and hidden {list(hidden)}"
        )
    layers: list[nn.Module] = []
    width = input_shape[0]
    for i, h in enumerate(hidden):
        layers += [nn.Conv1d(width, h, 5, padding=2), nn.ReLU()]
        if i == 0:
            layers.append(nn.MaxPool1d(3))  # [n, h, T] -> [n, h, T // 3]
        width = h
    # the mean over time: [n, width, steps] -> [n, width, 1] -> [n, width]
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


class CharLSTM(nn.Module):
    """Next-character prediction: embed each id, run stacked LSTMs, classify the last state.

    LEAF's Shakespeare reference is ``embed=8, hidden=256, layers=2`` (819k parameters with
    an 80-symbol vocabulary); smaller widths train far faster on CPU.
    """

    def __init__(self, vocab_size: int, embed: int = 8, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))  # [n, T, hidden]
        logits: torch.Tensor = self.head(out[:, -1])
        return logits


def char_lstm(num_classes: int, hidden: Sequence[int] = (256, 256), embed: int = 8) -> nn.Module:
    """A :class:`CharLSTM` over ``num_classes`` symbols; ``hidden`` gives one width per layer
    (all equal: an LSTM stack)."""
    if not hidden or len(set(hidden)) != 1:
        raise ValueError(f"char_lstm needs one or more equal widths, e.g. [256, 256]; got {list(hidden)}")
    return CharLSTM(num_classes, embed, hidden[0], len(hidden))


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ConfigError(
            "model.name = 'mcmahan_cnn' or 'cnn_bn' needs [channels, height, width] images of at least "
            f"4x4, but this dataset's inputs have shape {list(input_shape)}; for tabular data set "
            "model.name = 'mlp' (--model-name mlp)"
        )
    return input_shape[0], input_shape[1], input_shape[2]


ModelFactory = Callable[[], nn.Module]

__all__ = [
    "CharLSTM",
    "ModelFactory",
    "ModelName",
    "char_lstm",
    "cnn_bn",
    "mcmahan_2nn",
    "mcmahan_cnn",
    "mlp",
    "sensor_cnn",
]
