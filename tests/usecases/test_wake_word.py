"""The wake-word use case: examples/wake_word.toml trains a keyword spotter per home."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shoal import config as cfgmod
from shoal.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "wake_word.toml"

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="install espeak-ng (apt-get install espeak-ng) to run this test"
)


def test_the_example_reports_false_accepts_and_rejects_global_and_personal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the clips are made here, not reused
    cfg = cfgmod.load(EXAMPLE)
    assert cfg.data.dataset.value == "wake-word" and cfg.personalization.method is not None
    assert {"far", "frr"} <= set(cfg.eval.metrics)
    out = tmp_path / "ww"
    # 6 homes, 2 rounds, every home evaluated in round 2: the example's pieces, a little of each
    argv = ["run", "--quiet", "--config", str(EXAMPLE), "--out", str(out), "--rounds", "2"]
    flags = ["--num-clients", "6", "--clients-per-round", "3", "--federated-eval-every", "2"]
    assert main([*argv, *flags, "--federated-eval-clients", "6", "--eval-every", "2"]) == 0
    assert "final test accuracy: 0." in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2] and not records[-1]["aborted"]
    last = records[-1]
    # the headline figures: FAR and FRR of the global model on unseen homes, and of the
    # personal and global models on each home's own held-out clips
    for key in ("test_far", "test_frr", "fed_eval_far", "fed_eval_frr", "fed_eval_global_far"):
        assert 0.0 <= last[key] <= 1.0, key
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["clients"]) <= {f"home-{i:02d}" for i in range(6)}
    assert all("far" in c for c in summary["clients"].values())
    assert list((tmp_path / "cache" / "shoal" / "wake-word").glob("*.npz"))
