"""The keyboard use case: examples/keyboard.toml trains, and ``shoal predict`` completes text."""

from __future__ import annotations

import ast
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shoal import config as cfgmod
from shoal.cli import main
from shoal.data.shakespeare import VOCAB
from shoal.models import char_lstm
from shoal.params import ParamSpec, load_params, to_module

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "keyboard.toml"
PREFIX = "All the world's a stage, and all the men and women merely"
TINY = [  # a char LSTM of width 8 trained a little: enough to have weights to complete with
    "--dataset", "shakespeare", "--model-name", "char_lstm", "--hidden", "8", "--num-clients", "3",
    "--clients-per-round", "3", "--local-steps", "5", "--batch-size", "8", "--lr", "1.0",
    "--eval-every", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def char_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keyboard") / "run"
    assert main(["run", "--quiet", "--rounds", "2", "--out", str(out), *TINY]) == 0
    return out


def test_the_example_trains_under_secagg_plus_and_distributed_dp_on_the_phone_fleet(tmp_path, capsys):
    cfg = cfgmod.load(EXAMPLE)
    assert (cfg.privacy.mode.value, cfg.secagg.mode.value, cfg.fleet) == ("distributed", "secagg+", "phones")
    assert "top3" in cfg.eval.metrics
    out = tmp_path / "kb"
    argv = ["run", "--quiet", "--config", str(EXAMPLE), "--out", str(out), "--rounds", "2"]
    assert main([*argv, "--local-steps", "10", "--eval-every", "1"]) == 0
    printed = capsys.readouterr().out
    assert "final test accuracy: 0." in printed and "privacy: epsilon" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    committed = [r for r in records if not r["aborted"]]
    assert committed, [r.get("abort_reason") for r in records]
    last = records[-1]
    # the headline figures: top-1 and top-3 on the test set, epsilon, the fleet's clock
    assert 0.0 < last["test_accuracy"] <= last["test_top3"] <= 1.0
    assert last["secagg_threshold"] >= 2 and last["virtual_hours"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] == pytest.approx(last["test_accuracy"])
    assert 0.0 < summary["dp_epsilon"] < math.inf and 0.0 < summary["dp_delta"] < 1.0
    assert summary["backend"] == "FleetBackend"


def test_predict_prints_the_models_own_top_three_and_a_greedy_continuation(char_run, capsys):
    assert main(["predict", str(char_run), PREFIX, "--chars", "25"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("after ") and lines[4].startswith("completion (greedy, 25 characters)")
    shown = [line.strip().rsplit(maxsplit=1) for line in lines[1:4]]  # "' '  0.196"
    shown = [(ast.literal_eval(c), float(q)) for c, q in shown]
    # the same model, rebuilt here by hand, must give the printed top three
    model = char_lstm(len(VOCAB), (8,))
    spec = ParamSpec.from_module(model)
    to_module(load_params(char_run / "model.safetensors", spec), spec, model)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[VOCAB.index(c) for c in PREFIX]]))[0].double(), 0)
    p, i = torch.topk(probs, 3)
    assert [c for c, _ in shown] == [VOCAB[int(k)] for k in i]
    assert [q for _, q in shown] == pytest.approx([float(x) for x in p], abs=5e-4)
    completion = lines[5]
    assert completion.startswith(PREFIX) and len(completion) == len(PREFIX) + 25
    assert completion[len(PREFIX)] == VOCAB[int(i[0])]  # greedy: the first character is the top one
    assert set(completion) <= set(VOCAB)


def test_predict_is_deterministic_for_a_seed_and_whitespace_counts_as_one_space(char_run, capsys):
    argv = ["predict", str(char_run), "Why, how now,\n  Orlando", "--chars", "30", "--temperature", "1.5"]
    outputs = []
    for seed in ("4", "4", "5"):
        assert main([*argv, "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "sampled at temperature 1.5, seed 4" in outputs[0]
    assert outputs[0].splitlines()[-1].startswith("Why, how now, Orlando")
    # at temperature 1.5 a width-8 model's next characters are nearly uniform: 30 draws agree by chance
    # with probability far below 1e-6
    assert outputs[0].splitlines()[-1] != outputs[2].splitlines()[-1]


def test_predict_refuses_a_run_whose_classes_are_not_characters(tmp_path, capsys):
    run = tmp_path / "digits"
    run.mkdir()
    (run / "config.toml").write_text(cfgmod.to_toml(cfgmod.RunConfig()))  # mnist-subset, a CNN
    assert main(["predict", str(run), "hello"]) == 2
    err = capsys.readouterr().err
    assert "next-character model" in err and "'mnist-subset'" in err and 'dataset = "shakespeare"' in err


def test_predict_names_missing_pieces_and_unknown_characters(char_run, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nowhere"), "hello"]) == 2
    assert "run folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "hello"]) == 2
    assert "has no config.toml" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(char_run / "config.toml", unfinished / "config.toml")
    assert main(["predict", str(unfinished), "hello"]) == 2
    assert "has no model.safetensors" in capsys.readouterr().err
    assert main(["predict", str(char_run), "In 1599, Shakespeare wrote"]) == 2
    err = capsys.readouterr().err
    assert "'159'" in err and "never saw" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "temperature >= 0"),
        (["--chars", "many"], "whole number"),
        (["--top", "0"], "1 to"),
    ],
)
def test_predict_flag_errors_print_before_torch_loads(flags, message, tmp_path):
    probe = (
        "import sys\nfrom shoal.cli import main\n"
        f"try:\n    code = main(['predict', 'nowhere', 'hi', *{flags!r}])\nexcept SystemExit as exc:\n"
        "    code = exc.code\nprint('torch loaded:', 'torch' in sys.modules)\nsys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "torch loaded: False" in done.stdout
