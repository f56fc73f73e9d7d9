from __future__ import annotations

from pathlib import Path

import pytest

from shoal import config as c
from shoal.data import Partition
from shoal.errors import ConfigError

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))


def test_defaults_round_trip_through_toml(tmp_path):
    cfg = c.RunConfig()
    (tmp_path / "c.toml").write_text(c.to_toml(cfg))
    assert c.load(tmp_path / "c.toml") == cfg


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path):
    cfg = c.load(path)
    assert c.from_dict(c.to_dict(cfg)) == cfg


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            {"data": {"partiton": "iid"}},
            r"unknown config key 'data.partiton' \(did you mean 'partition'\?\)",
        ),
        (
            {"data": {"partition": "random"}},
            r"data.partition: 'random' is not allowed; choose one of 'iid', 'dirichlet'",
        ),
        ({"rounds": "many"}, "rounds: expected an integer"),
        ({"rounds": 2.5}, "rounds: expected an integer"),
        ({"rounds": 0}, "rounds must be >= 1"),
        ({"strategy": {"clients_per_round": 0}}, "clients_per_round must be >= 1"),
        ({"trainer": {"lr": -1}}, "trainer.lr must be > 0"),
        ({"trainer": {"momentum": True}}, "trainer.momentum: expected a number"),
        ({"data": {"dataset": "csv"}}, "needs data.path"),
        ({"data": {"holdout_fraction": 1.0}}, r"data.holdout_fraction must be in \[0, 1\)"),
        ({"data": 3}, r"\[data\] must be a table"),
        ({"colour": "red"}, "unknown config key 'colour'"),
        (
            {"transforms": ["half-precision"]},
            r"transforms: expected an import path .* set in \[compression\] uplink",
        ),
        ({"privacy": {"mode": "central"}, "strategy": {"name": "scaffold"}}, "scaffold needs each client's"),
        ({"privacy": {"mode": "central"}, "strategy": {"drop_stragglers": True}}, "drop_stragglers = false"),
        ({"privacy": {"noise_multiplier": 0}}, "noise_multiplier must be > 0"),
        ({"privacy": {"delta": 2}}, r"privacy.delta must be in \(0, 1\)"),
        ({"privacy": {"noise": "urandom"}}, "choose one of 'secure', 'seeded'"),
    ],
)
def test_bad_config_names_the_key_and_the_fix(raw, match):
    with pytest.raises(ConfigError, match=match):
        c.from_dict(raw)


def test_overrides_and_flags():
    raw = c.apply_overrides(
        {"rounds": 5},
        {"--rounds": "7", "--partition": "shards", "--hidden": "32,16", "--fraction": "0.2"},
    )
    cfg = c.from_dict(raw)
    assert cfg.rounds == 7 and cfg.data.partition is Partition.SHARDS
    assert cfg.model.hidden == (32, 16) and cfg.strategy.fraction == 0.2
    assert c.from_dict(c.apply_overrides({}, {"--fraction": "none"})).strategy.fraction is None
    with pytest.raises(ConfigError, match="did you mean '--rounds'"):
        c.apply_overrides({}, {"--rouns": "3"})
    names = [f.flag for f in c.flags()]
    assert len(names) == len(set(names))
    assert {"--clients-per-round", "--model-name", "--strategy-name", "--lr"} <= set(names)


def test_a_norm_bound_loads_with_and_without_hidden_updates():
    secure = {"strategy": {"max_update_norm": 5.0}, "secagg": {"mode": "secagg"}, "backend": "inprocess"}
    assert c.from_dict(secure).strategy.max_update_norm == 5.0  # held against the sum's mean
    assert c.from_dict({"strategy": {"max_update_norm": 5.0}}).strategy.max_update_norm == 5.0
