"""The connected-vehicles use case: examples/vehicles.toml, FedBuff on a fleet of cars."""

from __future__ import annotations

import json
from pathlib import Path

from shoal import config as cfgmod
from shoal.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "vehicles.toml"


def test_the_example_reports_accuracy_and_fleet_hours(tmp_path, capsys):
    cfg = cfgmod.load(EXAMPLE)
    assert cfg.data.dataset.value == "vehicles" and cfg.fleet == "vehicles"
    assert cfg.strategy.name.value == "fedbuff" and cfg.model.name.value == "sensor_cnn"
    out = tmp_path / "vehicles"
    # 40 cars, 2 server steps of 4 results each: the example's pieces, a little of each
    argv = ["run", "--quiet", "--config", str(EXAMPLE), "--out", str(out), "--rounds", "2"]
    flags = ["--num-clients", "40", "--clients-per-round", "6", "--buffer-size", "4"]
    flags += ["--federated-eval-every", "2"]
    assert main([*argv, *flags]) == 0
    assert "final test accuracy: 0." in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2] and not records[-1]["aborted"]
    last = records[-1]
    # the headline figures: accuracy on cars no client is, and the fleet's virtual hours
    assert 0.0 <= last["test_accuracy"] <= 1.0 and 0.0 <= last["fed_eval_accuracy"] <= 1.0
    assert last["virtual_hours"] > 0 and last["virtual_hours"] >= records[0]["virtual_hours"]
    assert any(key.startswith("tier_cockpit") for r in records for key in r)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clients"] and all(cid.startswith("car-") for cid in summary["clients"])
