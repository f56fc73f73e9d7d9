from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shoal.cli import main

TINY = [
    "--dataset",
    "digits",
    "--model-name",
    "mlp",
    "--hidden",
    "16",
    "--num-clients",
    "10",
    "--clients-per-round",
    "3",
    "--lr",
    "0.3",
    "--local-epochs",
    "2",
    "--batch-size",
    "16",
]


def test_run_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--quiet", "--rounds", "3", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "final test accuracy: 0." in printed
    for name in (
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
        "report.html",
        "summary.json",
        "checkpoint.safetensors",
    ):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    for key in (
        "train_loss",
        "test_accuracy",
        "clients_selected",
        "clients_completed",
        "clients_failed",
        "bytes_down",
        "bytes_up",
        "wall_time",
    ):
        assert key in records[-1], key
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 5 and "Accuracy" in page and "Bytes on the wire" in page
    assert "Other metrics" in page and "local_steps" in page  # what clients report beyond the built-ins
    assert "clients_per_round = 3" in (out / "config.toml").read_text()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()


def test_bad_flags_and_files_are_clear_errors(tmp_path, capsys):
    assert main(["run", "--quiet", "--partition", "zigzag", "--out", str(tmp_path)]) == 2
    assert "--partition: 'zigzag' is not allowed; choose one of 'iid'" in capsys.readouterr().err
    assert main(["run", "--quiet", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "--quiet", "--resume", str(tmp_path / "nothing")]) == 2
    assert "config" in capsys.readouterr().err


def _shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal.cli", *args]


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_model(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flags = ["--quiet", "--rounds", "8", "--seed", "4", *TINY]
    whole = subprocess.run(
        _shoal("run", "--out", str(tmp_path / "whole"), *flags),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())["model_hash"]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _shoal("run", "--out", str(out), *flags),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < 8, "the run should have been killed mid-way; make it longer if this machine is fast"
    resumed = subprocess.run(
        _shoal("run", "--quiet", "--resume", str(out)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"model hash: {expected}" in resumed.stdout
    assert [json.loads(x)["round"] for x in metrics.read_text().splitlines()] == list(range(1, 9))


def test_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "--clients-per-round" in text and "strategy.clients_per_round (default: 10)" in text
    assert "{iid,dirichlet,shards,quantity-skew}" in text


def test_privacy_prints_epsilon_ahead_and_calibrates_noise(capsys):
    from shoal.privacy import Sampling, epsilon

    args = ["privacy", "--clients", "1000", "--clients-per-round", "10", "--rounds", "100"]
    assert main([*args, "--noise-multiplier", "1.0"]) == 0
    expected = epsilon(Sampling.poisson(0.01, 1000), 1.0, 100, 1000**-1.1)
    assert f"after    100 rounds: epsilon {expected:.4f}" in capsys.readouterr().out
    assert main([*args, "--target-epsilon", "2"]) == 0
    z = float(capsys.readouterr().out.split("noise_multiplier ")[1].split()[0])
    assert epsilon(Sampling.poisson(0.01, 1000), z, 100, 1000**-1.1) <= 2.0
    assert main(["privacy", "--rounds", "3"]) == 2
    assert "--clients and --clients-per-round" in capsys.readouterr().err


def test_central_dp_run_reports_epsilon_and_stops_at_the_budget(tmp_path, capsys):
    out = tmp_path / "dp"
    flags = ["--privacy-mode", "central", "--sampling", "poisson", "--noise", "seeded"]
    flags += ["--target-epsilon", "6"]
    assert main(["run", "--quiet", "--rounds", "50", "--out", str(out), *TINY, *flags]) == 0
    printed = capsys.readouterr().out
    assert "privacy: epsilon" in printed and "stopped after round" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp_epsilon"] <= 6 and summary["rounds"] < 50 and "privacy budget" in summary["stopped"]
    assert "Privacy spent" in (out / "report.html").read_text()


def test_the_network_commands_refuse_secrets_on_the_command_line_and_odd_ids(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[data]\ndataset = "digits"\nnum_clients = 4\n')
    client = ["client", "--server", "127.0.0.1:1", "--config", str(config), "--insecure", "--experiment"]
    assert main([*client, "--client-id", "0", "--token", "s3cret"]) == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and "SHOAL_TOKEN" in err and "s3cret" not in err
    assert main([*client, "--client-id", "0\nINFO shoal.server: forged"]) == 2
    assert "--client-id '0\\nINFO shoal.server: forged' is not a valid client id" in capsys.readouterr().err
    assert main([*client, "--client-id", "0", "--token-file", str(tmp_path / "missing")]) == 2
    assert "token file" in capsys.readouterr().err
    assert main(["certs", str(tmp_path / "certs"), "--clients", "0,a b"]) == 2
    assert "not a valid client id" in capsys.readouterr().err
    tokens = tmp_path / "tokens"
    tokens.write_text("a/b " + "0" * 64 + "\n")
    server = [
        "server",
        "--config",
        str(config),
        "--insecure",
        "--tokens",
        str(tokens),
        "--quiet",
        "--experiment",
    ]
    assert main([*server, "--out", str(tmp_path / "out"), "--address", "127.0.0.1:0"]) == 2
    assert "not a valid client id" in capsys.readouterr().err


def test_python_dash_m_shoal_cli_is_the_shoal_command():
    done = subprocess.run(_shoal("privacy", "--rounds", "3"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--clients and --clients-per-round" in done.stderr


def test_a_bad_out_folder_is_refused_before_any_data_loads(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert main(["run", "--quiet", "--rounds", "1", "--out", str(a_file), *TINY]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    blocked = a_file / "under-a-file"
    assert main(["run", "--quiet", "--rounds", "1", "--out", str(blocked), *TINY]) == 2
    assert "cannot create the run folder" in capsys.readouterr().err


def test_a_cnn_on_tabular_data_says_which_model_to_pick(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    code = main(["run", "--quiet", "--rounds", "1", "--out", str(tmp_path / "r"), "--dataset", "csv",
                 "--path", str(table), "--num-clients", "4", "--clients-per-round", "2"])  # fmt: skip
    assert code == 2 and "model.name = 'mlp'" in capsys.readouterr().err


def test_more_clients_a_round_than_the_data_holds_is_refused(tmp_path, capsys):
    args = [*TINY, "--clients-per-round", "12"]  # the data holds 10
    assert main(["run", "--quiet", "--rounds", "1", "--out", str(tmp_path / "r"), *args]) == 2
    assert "clients_per_round is 12 but the data holds 10 clients" in capsys.readouterr().err


def test_the_run_folder_line_does_not_wrap_in_a_pipe(tmp_path, capsys):
    out = tmp_path / ("a-long-folder-name-" * 6) / "run"
    assert main(["run", "--quiet", "--rounds", "1", "--out", str(out), *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("run folder: ") and str(out / "report.html") in line for line in lines)
