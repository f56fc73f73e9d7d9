"""A deployment's server builds its run without the devices' data; each device checks its own."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from shoal import config, experiment
from shoal.data.datasets import ServerData
from shoal.errors import ConfigError, DataError
from shoal.models import mlp
from shoal.net.run import _cohort
from shoal.runtime.simulation import Simulation
from shoal.strategy.fedavg import FedAvg

DEPLOYED = {"data": {"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10}}


def cfg(**sections):
    raw = {k: dict(v) for k, v in DEPLOYED.items()}
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return config.from_dict(raw)


def test_the_server_needs_the_models_shapes_not_the_data():
    with pytest.raises(ConfigError, match=r"set data.input_shape .* or give server and devices --experiment"):
        experiment.server_data(config.from_dict({"data": {"dataset": "digits"}}))
    view = experiment.server_data(cfg())
    assert view == ServerData("digits", 10, (1, 8, 8), None)
    assert experiment.model_factory(cfg(), view)()[-1].out_features == 10


def test_the_servers_own_test_set_is_read_and_checked(tmp_path):
    path = tmp_path / "test.npz"
    np.savez(path, x=np.zeros((5, 1, 8, 8), np.float32), y=np.arange(5))
    assert len(experiment.server_data(cfg(data={"test_path": str(path)})).test) == 5
    np.savez(path, x=np.zeros((5, 64), np.float32), y=np.arange(5))
    with pytest.raises(DataError, match=r"shape \[64\] but data.input_shape is \[1, 8, 8\]"):
        experiment.server_data(cfg(data={"test_path": str(path)}))


def test_a_devices_own_files_must_fit_the_model(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.zeros((50, 1, 8, 8), np.float32), y=np.arange(50) % 5)
    client = experiment.device_data(cfg(data={"holdout_fraction": 0.2}), path)
    assert len(client.train) == 40 and client.test is not None and len(client.test) == 10
    np.savez(path, x=np.zeros((10, 1, 8, 8), np.float32), y=np.arange(10) + 5)
    with pytest.raises(DataError, match=r"labels go up to 14 but data\.num_classes is 10"):
        experiment.device_data(cfg(), path)


def test_a_deployment_says_what_it_cannot_count():
    with pytest.raises(ConfigError, match=r"set strategy\.max_num_examples"):
        cfg().strategy.limits(None)
    assert cfg(strategy={"max_num_examples": 500}).strategy.limits(None).max_num_examples == 500
    private = cfg(privacy={"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0})
    with pytest.raises(ConfigError, match=r"set privacy\.delta"):
        experiment.build_transforms(private, None, lambda: None)
    with pytest.raises(ConfigError, match="--min-clients"):
        _cohort(cfg(strategy={"fraction": 0.5}), experiment.server_data(cfg()), None)
    assert _cohort(cfg(strategy={"fraction": 0.5}), experiment.server_data(cfg()), 10) == 5


def test_a_server_without_client_data_refuses_to_simulate():
    view = experiment.server_data(cfg())
    model = functools.partial(mlp, view.input_shape, view.num_classes, (8,))
    with pytest.raises(ConfigError, match="explicit result limits"):
        Simulation(model, view, FedAvg(clients_per_round=2))
    with pytest.raises(ConfigError, match="serve it with shoal server"):
        experiment.build(cfg(strategy={"max_num_examples": 100}), None, data=view)


def test_a_simulation_builds_the_model_a_deployment_would():
    # the config's shapes win: a simulation whose data lacks a class still builds 10 outputs
    declared = cfg(data={"num_classes": 12}, model={"name": "mlp", "hidden": []})
    data = experiment.load_data(declared)
    assert data.num_classes == 10 and experiment.model_factory(declared, data)()[-1].out_features == 12
    with pytest.raises(DataError, match=r"examples have shape \[1, 8, 8\] but data.input_shape is \[64\]"):
        experiment.build(cfg(data={"input_shape": [64]}), None)
