"""Cold start: where round 1 starts (random, pretrained on proxy data, or a weights file)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shoal import config, experiment
from shoal.errors import ConfigError
from shoal.params import save_params

BASE = {
    "rounds": 2,
    "seed": 1,
    "backend": "inprocess",
    "data": {"dataset": "mnist-subset", "num_clients": 10},
    "model": {"name": "mlp", "hidden": [16]},
    "strategy": {"clients_per_round": 3},
    "trainer": {"lr": 0.1, "local_epochs": 1, "batch_size": 32},
}


def proxy_digits():
    """A user's loader of proxy data. Here the MNIST subset split another way, so it overlaps
    the devices' data (the config refuses the same dataset by name only); a real proxy is
    public data the devices do not hold."""
    from shoal.data import mnist_subset

    return mnist_subset(0.5, 7)


def cfg_with(**model) -> config.RunConfig:
    return config.from_dict({**BASE, "model": {**BASE["model"], **model}})


def test_random_start_is_the_seeds_initialization():
    sim = experiment.build(cfg_with(), None)
    again = experiment.build(cfg_with(init="random"), None)
    np.testing.assert_array_equal(sim.params, again.params)
    assert sim.initial == {}


def test_pretraining_on_proxy_data_gives_a_better_start_and_is_reproducible():
    cfg = cfg_with(init="pretrain", pretrain_dataset="tests.test_pretrain:proxy_digits", pretrain_epochs=2)
    sim = experiment.build(cfg, None)
    random = experiment.build(cfg_with(), None)
    assert sim.initial["init"] == "pretrain" and sim.initial["pretrain_examples"] == 2500
    initial = sim.initial["initial_test_accuracy"]
    assert initial > random.test(random.params)[1] + 0.3  # the first devices get a trained model
    assert sim.initial["pretrain_proxy_accuracy"] > 0.5
    np.testing.assert_array_equal(experiment.build(cfg, None).params, sim.params)  # seeded
    subset = experiment.build(
        cfg_with(**{**cfg.model.__dict__, "name": "mlp", "pretrain_examples": 100}), None
    )
    assert subset.initial["pretrain_examples"] == 100


def test_a_weights_file_is_the_start(tmp_path):
    sim = experiment.build(cfg_with(), None)
    weights = np.random.default_rng(0).normal(size=sim.spec.num_params).astype(np.float32)
    save_params(tmp_path / "start.safetensors", weights, sim.spec)
    started = experiment.build(cfg_with(init=str(tmp_path / "start.safetensors")), None)
    np.testing.assert_array_equal(started.params, weights)
    with pytest.raises(ConfigError, match="does not exist"):
        experiment.build(cfg_with(init=str(tmp_path / "missing.safetensors")), None)
    other = config.from_dict(
        {**BASE, "model": {"name": "mlp", "hidden": [8], "init": str(tmp_path / "start.safetensors")}}
    )
    with pytest.raises(ConfigError, match="this model's weights"):
        experiment.build(other, None)


def test_bad_cold_start_configs_say_what_to_do():
    with pytest.raises(ConfigError, match=r"set model\.pretrain_dataset"):
        cfg_with(init="pretrain")
    with pytest.raises(ConfigError, match="the devices' own dataset"):
        cfg_with(init="pretrain", pretrain_dataset="mnist-subset")
    with pytest.raises(ConfigError, match="must be 'random', 'pretrain' or the path"):
        cfg_with(init="imagenet")
    with pytest.raises(ConfigError, match=r"only with model\.init"):
        cfg_with(pretrain_dataset="digits")
    shapes = cfg_with(init="pretrain", pretrain_dataset="digits")  # 8x8 proxy for a 28x28 model
    with pytest.raises(ConfigError, match="must look like the devices' data"):
        experiment.build(shapes, None)


def test_the_summary_reports_the_start(tmp_path):
    cfg = cfg_with(init="pretrain", pretrain_dataset="tests.test_pretrain:proxy_digits", pretrain_epochs=1)
    experiment.run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["init"] == "pretrain" and 0 < summary["initial_test_accuracy"] <= 1
    resumed = experiment.resume(tmp_path, rounds=3)  # the checkpoint's weights: no pretraining again
    assert len(resumed.records) == 3 and "init" not in resumed.extra["summary"]
