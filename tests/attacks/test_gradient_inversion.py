"""Deep Leakage from Gradients against shoal's own client path, with and without local DP."""

from __future__ import annotations

import functools

import pytest

from shoal.attacks import gradient_from_update, invert_gradient, psnr, small_cnn
from shoal.client import TorchTrainer, run_train
from shoal.data import ClientData, digits
from shoal.messages import TrainResult, TrainTask
from shoal.params import ParamSpec, from_module, to_module
from shoal.privacy import LocalDP

LR = 0.1


@pytest.fixture(scope="module")
def victim():
    """One client's one-example, one-step update: what it sends the server."""
    data = digits()
    one = ClientData(data.train.subset([7]))
    model = functools.partial(small_cnn, 10)
    params, _ = from_module(model())
    return model, params, one


def _attack(model, params, delta):
    net = model()
    to_module(params, ParamSpec.from_module(net), net)
    return invert_gradient(net, gradient_from_update(net, delta, LR), (1, 8, 8), steps=60)


def _update(model, params, data, transforms=()):
    trainer = TorchTrainer(lr=LR, local_steps=1, batch_size=1)
    out = run_train(trainer.build(model), TrainTask(1, "victim", params, 0), data, transforms, run_seed=0)
    assert isinstance(out, TrainResult)
    return out.payload["delta"]


def test_an_undefended_update_gives_the_image_away(victim):
    model, params, data = victim
    found = _attack(model, params, _update(model, params, data))
    assert found.label == int(data.train.y[0])
    assert psnr(found.image, data.train.x) > 40  # near-exact: the private digit, pixel for pixel


def test_local_dp_noise_defeats_the_reconstruction(victim):
    model, params, data = victim
    clean = _update(model, params, data)
    bound = float((clean.astype("float64") ** 2).sum() ** 0.5)  # clip at the update's own norm
    noised = _update(model, params, data, [LocalDP(clip_norm=bound, noise_multiplier=1.0, noise="seeded")])
    found = _attack(model, params, noised)
    assert psnr(found.image, data.train.x) < 15
