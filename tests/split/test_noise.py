"""Activation noise is applied on the device, and a run is a function of its seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.data import FederatedDataset, LabeledData
from shoal.errors import ConfigError
from shoal.models import ModelFactory
from shoal.rng import NoiseName
from shoal.split import DeviceHalf, SplitConfig, cut_model, cut_shapes, run_split
from tests.split.conftest import seeded


def _half(factory: ModelFactory) -> DeviceHalf:
    parts = cut_model(seeded(factory), (2,))
    return DeviceHalf(parts, cut_shapes(parts, (1, 8, 8)), (1, 8, 8), lr=0.1)


def test_noise_of_the_asked_scale_is_added_to_what_is_sent(
    small_mlp_factory: ModelFactory, digits_data: LabeledData
) -> None:
    half, x = _half(small_mlp_factory), digits_data.train.x[:256]
    clean = half.forward(x)
    noisy = half.forward(x, noise_std=0.5, noise=torch.Generator().manual_seed(1))
    diff = (noisy - clean).ravel()
    assert abs(diff.std() - 0.5) < 0.02 and abs(diff.mean()) < 0.02  # 4,096 draws of N(0, 0.25)
    assert np.array_equal(half.forward(x), clean)  # no noise, no change


def test_the_gradient_of_the_noisy_tensor_trains_the_clean_one(small_mlp_factory: ModelFactory) -> None:
    # additive noise has Jacobian I: the bottom's gradient is the returned one pushed back
    half = _half(small_mlp_factory)
    x = torch.randn(4, 1, 8, 8)
    sent = half.forward(x, noise_std=1.0, noise=torch.Generator().manual_seed(0))
    half.backward(np.ones_like(sent))
    got = [p.grad.clone() for p in half.parts.bottom.parameters() if p.grad is not None]
    ref = seeded(small_mlp_factory)
    ref[1](ref[0](x)).sum().backward()
    assert all(torch.equal(a, b.grad) for a, b in zip(got, ref[1].parameters(), strict=True))


def _run(factory: ModelFactory, data: FederatedDataset, **kw: object) -> str:
    config = SplitConfig(cuts=(2,), protocol="splitfed-v1", batch_size=16, **kw)  # type: ignore[arg-type]
    return run_split(factory, data, config, rounds=2).model_hash


def test_a_run_is_determined_by_its_seed(small_mlp_factory: ModelFactory, fed4: FederatedDataset) -> None:
    seeded_noise = {"activation_noise": 0.1, "noise": NoiseName.SEEDED}
    assert _run(small_mlp_factory, fed4, seed=3, **seeded_noise) == _run(
        small_mlp_factory, fed4, seed=3, **seeded_noise
    )
    assert _run(small_mlp_factory, fed4, seed=3, **seeded_noise) != _run(
        small_mlp_factory, fed4, seed=4, **seeded_noise
    )
    assert _run(small_mlp_factory, fed4, seed=3) != _run(small_mlp_factory, fed4, seed=3, **seeded_noise)


def test_secure_noise_is_not_derived_from_the_seed(
    small_mlp_factory: ModelFactory, fed4: FederatedDataset
) -> None:
    secure = {"activation_noise": 0.1, "noise": NoiseName.SECURE}
    assert _run(small_mlp_factory, fed4, seed=3, **secure) != _run(small_mlp_factory, fed4, seed=3, **secure)


@pytest.mark.parametrize(
    ("field", "value"),
    [("activation_noise", -0.1), ("activation_noise", float("nan")), ("lr", 0.0), ("batch_size", 0),
     ("clients_per_round", 0), ("protocol", "splitfed-v3")],
)  # fmt: skip
def test_bad_settings_are_refused_when_the_config_is_made(field: str, value: object) -> None:
    with pytest.raises((ConfigError, ValueError)):
        SplitConfig(cuts=(2,), **{field: value})  # type: ignore[arg-type]
