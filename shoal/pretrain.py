"""Against the cold start: a first model trained on the server's public proxy data.

A federation that starts from random weights spends its first rounds, and its devices'
batteries, learning what public data could have taught: Nguyen et al. 2022 ("Where to
Begin? On the Impact of Pre-Training and Initialization in Federated Learning") found
that a pretrained start closes much of the gap non-IID data opens. ``[model] init``
chooses where round 1 starts: the seed's random weights, a model trained here on
``pretrain_dataset`` (data the devices do not hold; the config refuses their own), or a
``.safetensors`` file of the model's weights. Pretraining is the default trainer's own
minibatch loop (``TorchClient.fit``) over the proxy set, from the seed's weights, with
its own batch order; so it is reproducible and costs the devices nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from shoal import apps
from shoal.apps import Ref
from shoal.client.hparams import Personalization
from shoal.client.trainer import TorchClient, evaluate_module
from shoal.data.datasets import ArrayDataset, LabeledData
from shoal.errors import CheckpointError, ConfigError, SpecMismatchError
from shoal.models import ModelFactory
from shoal.params import load_params
from shoal.rng import Stream, seed_for
from shoal.runtime.simulation import initial_params

if TYPE_CHECKING:
    from shoal.config.schema import RunConfig


@dataclass(frozen=True)
class Start:
    """Where round 1 starts, and what it cost."""

    params: np.ndarray
    how: str  # "random", "pretrain" or the file's path
    examples: int = 0  # proxy examples pretrained on
    seconds: float = 0.0
    proxy_accuracy: float | None = None  # on the proxy set's own test split, when it has one


def start(cfg: RunConfig, model: ModelFactory, shape: tuple[int, ...], classes: int) -> Start:
    """The initial weights ``cfg.model.init`` asks for, checked against the model."""
    params, spec = initial_params(model, cfg.seed)
    init = cfg.model.init
    if init == "random":
        return Start(params, init)
    if init != "pretrain":
        try:
            return Start(load_params(Path(init).expanduser(), spec), init)
        except (CheckpointError, SpecMismatchError, KeyError, ValueError) as exc:
            raise ConfigError(f"model.init = {init!r}: {exc}; it must hold this model's weights") from None
    proxy = _proxy(cfg, shape, classes)
    began = time.perf_counter()
    hp = replace(cfg.trainer, lr=cfg.model.pretrain_lr or cfg.trainer.lr, personalization=Personalization())
    app = TorchClient(model(), hp)
    steps = cfg.model.pretrain_epochs * math.ceil(len(proxy.train) / app.hparams.batch_size)
    app.fit(params, proxy.train, steps, seed_for(cfg.seed, 0, Stream.PRETRAIN))
    accuracy = (
        evaluate_module(app.module, proxy.test)[1] if proxy.test is not None and len(proxy.test) else None
    )
    return Start(app.weights(), init, len(proxy.train), time.perf_counter() - began, accuracy)


def _proxy(cfg: RunConfig, shape: tuple[int, ...], classes: int) -> LabeledData:
    """The proxy set, at most ``pretrain_examples`` of it, checked against the model's shapes."""
    from shoal.experiment import labeled

    m = cfg.model
    name = m.pretrain_dataset
    assert name is not None, "the config requires pretrain_dataset with init = 'pretrain'"
    if isinstance(name, Ref):
        offered = {"path": m.pretrain_path, "seed": cfg.seed, "test_fraction": cfg.data.test_fraction}
        data: LabeledData = apps.build("model.pretrain_dataset", name, LabeledData, offered)
    else:
        data = labeled(name, m.pretrain_path, cfg.data.label_column, cfg.data.test_fraction, cfg.seed)
    got = tuple(data.train.x.shape[1:])
    if got != tuple(shape):
        raise ConfigError(
            f"model.pretrain_dataset's examples have shape {list(got)} but the model takes {list(shape)}: "
            "the proxy data must look like the devices' data"
        )
    if int(data.train.y.max()) >= classes:
        raise ConfigError(
            f"model.pretrain_dataset has labels up to {int(data.train.y.max())}, "
            f"but the model has {classes} classes"
        )
    if m.pretrain_examples is not None and m.pretrain_examples < len(data.train):
        order = np.random.default_rng(seed_for(cfg.seed, 0, Stream.PRETRAIN, "subset")).permutation(
            len(data.train)
        )
        keep = torch.from_numpy(order[: m.pretrain_examples])
        data = replace(data, train=ArrayDataset(data.train.x[keep], data.train.y[keep]))
    return data
