from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shoal.errors import CheckpointError, SpecMismatchError
from shoal.params import (
    FlatModule,
    ParamSpec,
    flatten,
    from_module,
    load_params,
    model_hash,
    save_params,
    to_module,
    unflatten,
)


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))


def test_spec_covers_params_and_float_buffers_only():
    spec = ParamSpec.from_module(net())
    assert "1.running_mean" in spec.names
    assert "1.num_batches_tracked" not in spec.names  # an integer counter is not a weight
    assert spec.num_params == sum(spec.sizes) == 2 * 9 + 2 + 2 * 4 + 72 * 3 + 3


def test_flatten_unflatten_round_trip():
    vec, spec = from_module(net())
    again = flatten(unflatten(vec, spec), spec)
    assert np.array_equal(vec, again)
    assert ParamSpec.from_json(spec.to_json()) == spec


def test_flatten_names_the_mismatch():
    vec, spec = from_module(net())
    named = unflatten(vec, spec)
    del named["0.weight"]
    with pytest.raises(SpecMismatchError, match=r"missing \['0.weight'\]"):
        flatten(named, spec)
    bad = dict(unflatten(vec, spec))
    bad["3.bias"] = np.zeros(4, np.float32)
    with pytest.raises(SpecMismatchError, match=r"3\.bias: shape"):
        flatten(bad, spec)


def test_to_module_refuses_wrong_sizes_and_nan():
    vec, spec = from_module(net())
    with pytest.raises(SpecMismatchError, match="float32"):
        to_module(vec[:-1], spec, net())
    vec[0] = np.nan
    with pytest.raises(SpecMismatchError, match="NaN"):
        to_module(vec, spec, net())


def test_flat_module_views_track_optimizer_steps():
    torch.manual_seed(0)
    m = net()
    expected, _ = from_module(m)
    flat = FlatModule(m)
    assert np.array_equal(flat.numpy(), expected)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    after, _ = from_module(m)
    assert np.array_equal(flat.numpy(), after)  # the buffer *is* the weights
    assert not np.array_equal(after, expected)
    flat.load(expected)
    assert np.array_equal(from_module(m)[0], expected)


def test_save_load_and_hash(tmp_path):
    vec, spec = from_module(net())
    save_params(tmp_path / "m.safetensors", vec, spec)
    assert model_hash(load_params(tmp_path / "m.safetensors", spec)) == model_hash(vec)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_params(tmp_path / "bad.safetensors", spec)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_params(tmp_path / "missing.safetensors", spec)
