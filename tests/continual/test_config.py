from __future__ import annotations

import pytest

from shoal.continual import ContinualConfig, DriftKind
from shoal.data import digits, iid
from shoal.data.drift import Joining, LabelShift, NewClasses
from shoal.errors import ConfigError


def test_defaults_turn_everything_off():
    cfg = ContinualConfig()
    assert cfg.drift is None and cfg.schedule(iid(digits(), 4), seed=0) is None
    assert (cfg.replay_size, cfg.ewc_lambda) == (0, 0.0)


@pytest.mark.parametrize(
    ("kind", "rounds", "cls"),
    [("new-classes", [5], NewClasses), ("label-shift", [3, 8], LabelShift), ("joining", [2, 4], Joining)],
)
def test_each_kind_builds_its_schedule(kind, rounds, cls):
    cfg = ContinualConfig(drift=kind, drift_rounds=rounds, replay_size=50, ewc_lambda=10.0)
    assert cfg.drift is DriftKind(kind) and cfg.drift_rounds == tuple(rounds)
    schedule = cfg.schedule(iid(digits(), 6), seed=1)
    assert isinstance(schedule, cls) and schedule.rounds == tuple(rounds)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        (
            {"drift": "concept-shift", "drift_rounds": [3]},
            "continual.drift 'concept-shift' is unknown; choose",
        ),
        ({"drift": "new-classes"}, "needs drift_rounds"),
        (
            {"drift": "new-classes", "drift_rounds": [1]},
            "continual.drift_rounds must be increasing rounds >= 2",
        ),
        ({"drift": "new-classes", "drift_rounds": [6, 4]}, "continual.drift_rounds must be increasing"),
        ({"drift": "new-classes", "drift_rounds": 5}, "continual.drift_rounds must be a list"),
        ({"drift": "label-shift", "drift_rounds": [2, 4, 6]}, "label-shift is \\[start, end\\]"),
        ({"drift_alpha": 0.0}, "continual.drift_alpha must be > 0"),
        ({"drift_share": 1.5}, "continual.drift_share must be in"),
        ({"replay_size": -1}, "continual.replay_size must be a whole number"),
        ({"replay_size": 2.5}, "continual.replay_size must be a whole number"),
        ({"replay_share": 1.0}, "continual.replay_share must be in"),
        ({"ewc_lambda": -1.0}, "continual.ewc_lambda must be >= 0"),
        ({"ewc_lambda": 1.0}, "continual.ewc_lambda needs drift_rounds"),
        ({"ewc_decay": 0.0}, "continual.ewc_decay must be in"),
    ],
)
def test_mistakes_name_the_key_and_the_fix(settings, names):
    with pytest.raises(ConfigError, match=names):
        ContinualConfig(**settings)


def test_the_config_table_reaches_every_device_and_the_data():
    from shoal import config, experiment

    raw = {
        "rounds": 6,
        "data": {"dataset": "digits", "num_clients": 6},
        "model": {"name": "mlp", "hidden": [8]},
        "strategy": {"clients_per_round": 3},
        "continual": {"drift": "new-classes", "drift_rounds": [4], "replay_size": 10},
    }
    cfg = config.from_dict(raw)
    assert cfg.trainer.continual == cfg.continual  # what a device's trainer reads
    data = experiment.load_data(cfg)
    assert set(data.test_sets()) == {"old", "new"}
    with pytest.raises(ConfigError, match="reach past the run's 6 rounds"):
        config.from_dict({**raw, "continual": {"drift": "new-classes", "drift_rounds": [9]}})
    with pytest.raises(ConfigError, match='backend = "ray"'):
        config.from_dict({**raw, "backend": "ray"})
