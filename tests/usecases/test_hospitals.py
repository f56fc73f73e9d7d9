"""The hospitals use case: examples/hospitals.toml (FedProx, CKKS) runs and reports per site.
The network version, with `shoal keyholder` as its own process, is tests/net/test_keyholder_processes.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.cli import main
from shoal.config import load

pytest.importorskip("tenseal")
ROOT = Path(__file__).resolve().parents[2]


def test_the_example_runs_encrypted_and_scores_every_site(tmp_path, capsys) -> None:
    cfg = load(ROOT / "examples" / "hospitals.toml")
    assert (
        cfg.he.enabled and cfg.strategy.name.value == "fedprox" and cfg.eval.metrics == ("recall", "roc_auc")
    )
    out = tmp_path / "run"
    args = ["run", "--config", str(ROOT / "examples/hospitals.toml"), "--rounds", "2", "--out", str(out)]
    assert main([*args, "--federated-eval-every", "2", "--quiet"]) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["clients_completed"] == 5 and last["he_ciphertext_bytes"] > 100_000  # encrypted
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["clients"]) == {"university", "regional", "community", "screening", "rural"}
    assert 0 <= summary["final_test_recall"] <= 1 and 0.5 < summary["final_test_roc_auc"] <= 1
    printed = capsys.readouterr().out
    assert "test recall" in printed and "screening" in printed  # the per-site table


def test_the_network_example_refuses_to_simulate_with_its_key_holder(tmp_path) -> None:
    code = main(["run", "--config", str(ROOT / "examples/hospitals_network.toml"), "--out", str(tmp_path)])
    assert code == 2  # a ShoalError: drop he.keyholder to simulate
