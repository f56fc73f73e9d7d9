from __future__ import annotations

import pytest

from shoal import config as c
from shoal.errors import ConfigError
from shoal.experiment import build, load_data, make_backend, make_transforms, model_factory
from shoal.runtime import InProcessBackend
from shoal.runtime.vectorized import VectorizedBackend


def backend_for(**raw):
    cfg = c.from_dict({"data": {"dataset": "digits", "num_clients": 20}, **raw})
    data = load_data(cfg)
    per_round = cfg.strategy.build().num_to_select(len(data))
    return make_backend(cfg, model_factory(cfg, data), data, make_transforms(cfg.transforms), per_round)


def test_auto_vectorizes_dense_models_with_many_clients():
    assert isinstance(backend_for(model={"name": "mlp"}), VectorizedBackend)
    assert isinstance(backend_for(model={"name": "mlp"}, strategy={"clients_per_round": 2}), InProcessBackend)
    assert isinstance(backend_for(model={"name": "mcmahan_cnn"}), InProcessBackend)
    assert isinstance(backend_for(model={"name": "mlp"}, trainer={"optimizer": "adam"}), InProcessBackend)


def test_forcing_either_path():
    assert isinstance(backend_for(model={"name": "mlp"}, backend="inprocess"), InProcessBackend)
    assert isinstance(backend_for(model={"name": "mcmahan_cnn"}, backend="vectorized"), VectorizedBackend)
    with pytest.raises(ConfigError, match='backend = "vectorized": the vectorized path implements SGD only'):
        backend_for(model={"name": "mlp"}, backend="vectorized", trainer={"optimizer": "adam"})


def test_build_runs_a_round(tmp_path):
    cfg = c.from_dict(
        {"rounds": 1, "data": {"dataset": "digits", "num_clients": 10}, "model": {"name": "mlp"}}
    )
    record = build(cfg, tmp_path).step(last=1)
    assert record["clients_completed"] == 10 and record["test_accuracy"] > 0
