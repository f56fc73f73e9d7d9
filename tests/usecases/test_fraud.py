"""The fraud use case: examples/fraud.toml trains one fraud model across banks, robustly."""

from __future__ import annotations

import json
from pathlib import Path

from shoal import config as cfgmod
from shoal.attacks.poison import hostile
from shoal.cli import main
from shoal.data.fraud import BANKS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fraud.toml"


def test_the_example_reports_pr_auc_per_bank(tmp_path, capsys):
    cfg = cfgmod.load(EXAMPLE)
    assert cfg.data.dataset.value == "fraud" and cfg.strategy.aggregator.value == "trimmed-mean"
    assert cfg.strategy.attackers == 1 and "pr_auc" in cfg.eval.metrics
    out = tmp_path / "fraud"
    # 4 banks, 2 rounds, every bank evaluated in round 2: the example's pieces, a little of each
    argv = ["run", "--quiet", "--config", str(EXAMPLE), "--out", str(out), "--rounds", "2"]
    flags = ["--num-clients", "4", "--clients-per-round", "4", "--federated-eval-every", "2"]
    assert main([*argv, *flags]) == 0
    assert "test pr auc: 0." in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2] and not records[-1]["aborted"]
    last = records[-1]
    for key in ("test_pr_auc", "test_roc_auc", "fed_eval_pr_auc", "fed_eval_recall"):
        assert 0.0 <= last[key] <= 1.0, key
    assert last["test_pr_auc"] > 0.05  # above the 1% base rate a random ranking scores
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["clients"]) == {b.name for b in BANKS[:4]}
    assert all(0.0 <= c["pr_auc"] <= 1.0 for c in summary["clients"].values())


def test_the_headers_attack_makes_one_bank_hostile():
    # the header's --attack-fraction 0.125 --attack-seed 9: exactly one bank, "regional"
    assert [b.name for b in BANKS if hostile(b.name, 0.125, 9)] == ["regional"]
    assert "--attack-seed 9" in EXAMPLE.read_text()
