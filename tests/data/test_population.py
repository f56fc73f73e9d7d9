"""A population of a million devices costs what the devices a run touches cost."""

from __future__ import annotations

import numpy as np

from shoal import config, experiment
from shoal.data.population import IdRange, synthetic_population
from shoal.fleet.devices import Fleet
from shoal.fleet.spec import load_fleet


def test_a_million_devices_are_made_only_when_used():
    data = synthetic_population(1_000_000, seed=4, test_devices=5)
    assert len(data) == 1_000_000 and isinstance(data.client_ids, IdRange)
    assert data.clients._make.cache_info().currsize == 5  # type: ignore[attr-defined]  # the test set's
    a, b = data["731004"], data["731004"]
    again = synthetic_population(1_000_000, seed=4, test_devices=5)["731004"]
    assert a is b and np.array_equal(a.train.x.numpy(), again.train.x.numpy())
    assert data.sizes()["731004"] == len(a.train) and "1000000" not in data.client_ids
    assert "007" not in data.client_ids and data.client_ids[-1] == "999999"


def test_a_fleet_of_a_million_draws_its_devices_without_listing_them():
    data = synthetic_population(1_000_000, test_devices=1)
    fleet = Fleet(load_fleet("phones"), data.client_ids, seed=0)
    share = fleet.eligible(3 * 3600.0).mean()
    assert 0.05 < share < 0.5  # Wi-Fi devices idle and charging, over every time zone
    assert fleet.profile("999999").tier in {"low", "mid", "high"}


def test_a_population_trains_as_a_dataset_does(tmp_path):
    raw = {
        "rounds": 2, "backend": "inprocess", "fleet": "phones",
        "data": {"dataset": "synthetic-population", "num_clients": 200_000},
        "model": {"name": "mlp", "hidden": []}, "strategy": {"clients_per_round": 10},
        "trainer": {"lr": 0.01, "local_steps": 5, "batch_size": 10},
    }  # fmt: skip
    history = experiment.run(config.from_dict(raw), tmp_path / "run")
    assert [r["clients_completed"] for r in history.records] == [10, 10]
