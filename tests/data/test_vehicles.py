from __future__ import annotations

import numpy as np
import pytest

from shoal import config as c
from shoal.data.vehicles import CLASS_MIX, CLASSES, STEPS, TEST_VEHICLES, TEST_WINDOWS, Vehicle, vehicles
from shoal.errors import DataError
from shoal.experiment import load_data
from shoal.fleet.spec import load_fleet

ACC_X, ACC_Y, ACC_Z, GYRO_X, GYRO_Y, GYRO_Z = range(6)


@pytest.fixture(scope="module")
def data():
    return vehicles(40, seed=0, holdout_fraction=0.2)


def label(name: str) -> int:
    return CLASSES.index(name)


def test_shapes_names_and_sizes(data):
    assert list(data)[:3] == ["car-0", "car-1", "car-2"] and len(data) == 40
    assert data.input_shape == (6, 75) == (6, STEPS) and data.num_classes == 7
    for car in data:
        train, held = data[car].train, data[car].test
        total = len(train) + len(held)
        assert 30 <= total <= 400 and abs(len(held) - 0.2 * total) <= 1
        assert train.x.shape[1:] == (6, 75) and train.x.dtype.is_floating_point
    assert len(data.test) == TEST_VEHICLES * TEST_WINDOWS


def test_seeded(data):
    again = vehicles(40, seed=0, holdout_fraction=0.2)
    assert all(np.array_equal(data[k].train.x, again[k].train.x) for k in data)
    assert not np.array_equal(data["car-0"].train.x, vehicles(1, seed=1)["car-0"].train.x)
    # a car is its own draw: the same car whatever the fleet's size, and the same test set
    small = vehicles(3, seed=0, holdout_fraction=0.2)
    assert np.array_equal(small["car-2"].train.x, data["car-2"].train.x)
    assert np.array_equal(small.test.x, data.test.x)


def test_class_mixes_are_the_fleets_on_average_and_each_cars_own(data):
    mixes = np.array([np.bincount(data[k].train.y.numpy(), minlength=7) / len(data[k].train) for k in data])
    assert np.allclose(mixes.mean(0), CLASS_MIX, atol=0.05)
    assert mixes.std(0).min() > 0.03  # Dirichlet(5 x mix): the cars' mixes differ
    test_mix = np.bincount(data.test.y.numpy(), minlength=7) / len(data.test)
    assert np.allclose(test_mix, CLASS_MIX, atol=0.03)


def test_manoeuvres_have_their_physics():
    rng = np.random.default_rng(0)
    car = Vehicle(rng)
    car.mounting = np.eye(3)  # read in the vehicle's own frame
    car.bias[:] = 0.0
    x, _ = car.windows(np.repeat(np.arange(7), 200), rng)
    by = {name: x[i * 200 : (i + 1) * 200] for i, name in enumerate(CLASSES)}
    assert abs(by["cruise"][:, ACC_Z].mean() - 1.0) < 0.02  # gravity: +1 g upward at rest
    assert by["left-turn"][:, ACC_Y].mean() > 0.05 > -0.05 > by["right-turn"][:, ACC_Y].mean()
    assert by["left-turn"][:, GYRO_Z].mean() > 0.1 > -0.1 > by["right-turn"][:, GYRO_Z].mean()
    assert by["hard-brake"][:, ACC_X].min(1).mean() < -0.3 < 0.2 < by["hard-accel"][:, ACC_X].max(1).mean()
    lane = by["lane-change"][:, ACC_Y]
    assert abs(lane.mean()) < 0.02 < lane.std()  # out and back: no net lateral acceleration
    jolt = np.ptp(by["bump"][:, ACC_Z], axis=1).mean()  # a bump's jolt stands out of the road's shake
    assert jolt > 1.5 * np.ptp(by["cruise"][:, ACC_Z], axis=1).mean()
    assert np.ptp(by["bump"][:, GYRO_Y], axis=1).mean() > 1.5 * np.ptp(by["cruise"][:, GYRO_Y], axis=1).mean()


def test_vehicles_differ_in_mounting_noise_and_road(data):
    # mounting rotations leak gravity into x and y: each car's mean cruise reading differs
    cruise = [data[k].train.x[data[k].train.y == label("cruise")].numpy() for k in data]
    gravity_x = np.array([w[:, ACC_X].mean() for w in cruise if len(w)])
    assert gravity_x.std() > 0.03
    roughness = np.array([w[:, ACC_Z].std(1).mean() for w in cruise if len(w)])
    assert roughness.max() > 2 * roughness.min()


def test_bad_arguments_fail_and_the_config_loads():
    with pytest.raises(DataError, match="num_clients"):
        vehicles(0)
    with pytest.raises(DataError, match="holdout_fraction"):
        vehicles(2, holdout_fraction=-0.1)
    assert vehicles(2, holdout_fraction=0.0)["car-0"].test is None
    cfg = c.from_dict({"seed": 2, "data": {"dataset": "vehicles", "num_clients": 3, "holdout_fraction": 0.1}})
    d = load_data(cfg)
    assert d.name == "vehicles" and list(d) == ["car-0", "car-1", "car-2"]
    assert np.array_equal(d["car-1"].train.x, vehicles(3, seed=2, holdout_fraction=0.1)["car-1"].train.x)


def test_the_vehicle_fleet_loads_and_says_what_it_models():
    fleet = load_fleet("vehicles")
    assert fleet.name == "vehicles" and fleet.source.endswith("vehicles.toml")
    assert {t.name for t in fleet.tiers} == {"tcu", "cockpit-8155", "cockpit-8295"}
    assert all(t.battery_wh == 0 for t in fleet.tiers)  # trains only while the car is powered
    assert {n.name for n in fleet.networks} == {"lte", "5g", "garage-wifi"}
    hours = fleet.availability.eligible_by_hour
    assert min(hours) > 0.05 and max(hours) < 0.15  # about one car in ten, at any hour
    assert hours[17] > hours[11] and hours[8] > hours[10]  # commute peaks over the midday low
    assert hours[2] > hours[11]  # EVs charging overnight
