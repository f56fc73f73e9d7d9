"""`shoal run` with a [split] table: split learning from a config, into a run folder."""

from __future__ import annotations

import json

import pytest

from shoal import config, experiment
from shoal.cli import main
from shoal.errors import CheckpointError, ConfigError
from shoal.split import SplitConfig, run_split

RAW = {
    "rounds": 2,
    "seed": 3,
    "data": {"dataset": "digits", "num_clients": 4},
    "model": {"name": "mlp", "hidden": [16]},
    "strategy": {"clients_per_round": 2},
    "trainer": {"lr": 0.1, "local_epochs": 1, "batch_size": 16},
    "split": {"protocol": "splitfed-v1", "cuts": [2], "activation_rng": "seeded"},
}


def test_a_config_runs_split_learning_into_a_run_folder(tmp_path):
    cfg = config.from_dict(RAW)
    history = experiment.run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "split learning (splitfed-v1)" and summary["rounds"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and all(r["clients_completed"] == 2 for r in rows)
    assert summary["bytes_up"] == sum(r["bytes_up"] for r in rows) > 0
    # the same run through the library: the config's [trainer] and [strategy] are its settings
    data = experiment.load_data(cfg)
    direct = run_split(
        experiment.model_factory(cfg, data),
        data,
        SplitConfig(cuts=(2,), protocol="splitfed-v1", lr=0.1, batch_size=16, clients_per_round=2,
                    seed=3, noise="seeded", max_num_examples=max(data.sizes().values())),
        rounds=2,
    )  # fmt: skip
    assert direct.model_hash == history.model_hash == summary["model_hash"]
    assert (tmp_path / "model.safetensors").is_file()
    with pytest.raises(CheckpointError, match="no checkpoints"):
        experiment.resume(tmp_path)


def test_the_command_line_runs_it_and_renders_the_report(tmp_path):
    path = tmp_path / "split.toml"
    path.write_text(config.to_toml(config.from_dict(RAW)))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "report.html").is_file()


@pytest.mark.parametrize(
    ("more", "message"),
    [
        ({"privacy": {"mode": "central"}}, r"\[privacy\] do not apply"),
        ({"secagg": {"mode": "secagg"}}, r"\[secagg\] do not apply"),
        ({"personalization": {"method": "fedper"}, "eval": {"federated_eval_every": 1}}, "personalization"),
        ({"trainer": {**RAW["trainer"], "momentum": 0.9}}, "plain SGD"),
        ({"split": {"protocol": "splitnn"}}, "one layer index"),
        ({"split": {"cuts": [2]}}, "only with split.protocol"),
    ],
)
def test_what_split_learning_cannot_use_is_refused(more, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict({**RAW, **more})  # each table given replaces RAW's
