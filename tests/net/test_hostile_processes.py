"""Hostile peers against a real `shoal server` process with honest `shoal client` processes
on 127.0.0.1 (issue 11): every round must still commit, and devices must never die."""

from __future__ import annotations

import pytest

from shoal.net.auth import token_digest
from tests.net.attackers import IdleUploads
from tests.net.procs import CONFIG, free_port, records, shoal, stop, wait_for

pytestmark = pytest.mark.slow


def _server(config, out, address, *extra, log):
    args = ["server", "--config", str(config), "--address", address, "--out", str(out), "--quiet"]
    args.append("--experiment")
    return shoal(*args, "--insecure", *extra, log=log)


def _client(config, address, cid, log, *extra, env=None):
    args = ["client", "--server", address, "--config", str(config), "--client-id", cid, "--insecure"]
    args.append("--experiment")
    return shoal(*args, "--give-up", "60", *extra, log=log, env=env)


def _listening(address: str) -> bool:
    import socket

    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def test_idle_upload_streams_from_one_peer_do_not_stall_any_round(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        CONFIG.replace("rounds = 8", "rounds = 3").replace("local_epochs = 3", "local_epochs = 1")
    )
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    server = _server(
        config, out, address, "--min-clients", "3", "--round-timeout", "10", log=tmp_path / "s.log"
    )
    clients = []
    try:
        wait_for(lambda: _listening(address), 30, "the server to listen")
        # client "3" is enrolled but runs no device: its 200 streams never send a byte
        with IdleUploads(address, "3", 200) as attack:
            clients = [_client(config, address, c, tmp_path / f"c{c}.log") for c in "012"]
            assert server.wait(timeout=60) == 0, (tmp_path / "s.log").read_text()
        for c in clients:
            assert c.wait(timeout=30) == 0
    finally:
        stop(server, *clients)
    rounds = records(out / "metrics.jsonl")
    assert [r["clients_completed"] for r in rounds] == [3, 3, 3], rounds
    assert not any(r["aborted"] for r in rounds)
    # the peer holds no task: each of its streams was answered at once, before a byte was read
    assert attack.codes["OK refused"] > 200 and not attack.codes["OK accepted"], attack.codes


def test_diverged_training_costs_the_update_not_the_device_and_a_done_run_resumes_alone(tmp_path):
    config = tmp_path / "run.toml"
    # lr 1e30: every device's training diverges to a non-finite loss and update in round 1
    config.write_text(CONFIG.replace("rounds = 8", "rounds = 2").replace("lr = 0.3", "lr = 1e30")
                      .replace("local_epochs = 3", "local_epochs = 1"))  # fmt: skip
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    # per-device tokens: two devices read theirs from a file, one from SHOAL_TOKEN
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{c} {token_digest('token-' + c)}\n" for c in "0123"))
    for c in "01":
        (tmp_path / f"token-{c}").write_text(f"token-{c}\n")
    extra = ["--min-clients", "3", "--round-timeout", "15", "--tokens", str(tokens)]
    server = _server(config, out, address, *extra, log=tmp_path / "s.log")
    clients = [
        _client(config, address, c, tmp_path / f"c{c}.log", "--token-file", str(tmp_path / f"token-{c}"))
        for c in "01"
    ]
    clients.append(_client(config, address, "2", tmp_path / "c2.log", env={"SHOAL_TOKEN": "token-2"}))
    try:
        assert server.wait(timeout=60) == 0, (tmp_path / "s.log").read_text()
        for c, p in zip("012", clients, strict=True):
            assert p.wait(timeout=30) == 0, (tmp_path / f"c{c}.log").read_text()
    finally:
        stop(server, *clients)
    rounds = records(out / "metrics.jsonl")
    assert len(rounds) == 2 and all(r["aborted"] and r["clients_completed"] == 0 for r in rounds)
    # each device told the server why, at once, instead of leaving it to time out
    assert all(f.split(": ")[1] == "error" for r in rounds for f in r["failures"]), rounds
    assert all(r["wall_time"] < 10 for r in rounds), rounds

    # a server killed after its last checkpoint but before it saved the model: the resumed
    # server finishes the run at once, without waiting for devices that have left
    (out / "model.safetensors").unlink()
    (out / "summary.json").unlink()
    extra = ["--resume", "--join-timeout", "120", "--tokens", str(tokens)]
    resumed = _server(config, out, address, *extra, log=tmp_path / "r.log")
    try:
        assert resumed.wait(timeout=30) == 0, (tmp_path / "r.log").read_text()
    finally:
        stop(resumed)
    assert (out / "model.safetensors").is_file() and (out / "summary.json").is_file()
    assert len(records(out / "metrics.jsonl")) == 2


def test_forged_compressed_uploads_cost_their_senders_only(tmp_path):
    """Devices 3 and 4 send updates the server's codec cannot read (another top-k size; 1-bit
    quantization in place of top-k): each round counts the three honest devices."""
    compressed = CONFIG.replace("rounds = 8", "rounds = 3").replace("num_clients = 4", "num_clients = 5")
    compressed = compressed.replace("clients_per_round = 3", "clients_per_round = 5")
    config, wrong_k, wrong_codec = tmp_path / "run.toml", tmp_path / "k.toml", tmp_path / "q.toml"
    config.write_text(compressed + '[compression]\nuplink = "top-k"\nkeep_fraction = 0.05\n')
    wrong_k.write_text(compressed + '[compression]\nuplink = "top-k"\nkeep_fraction = 0.1\n')
    wrong_codec.write_text(compressed + '[compression]\nuplink = "quantize"\nbits = 1\n')
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    server = _server(
        config, out, address, "--min-clients", "5", "--round-timeout", "30", log=tmp_path / "s.log"
    )
    clients = [_client(config, address, c, tmp_path / f"c{c}.log") for c in "012"]
    clients += [
        _client(wrong_k, address, "3", tmp_path / "c3.log"),
        _client(wrong_codec, address, "4", tmp_path / "c4.log"),
    ]
    try:
        assert server.wait(timeout=120) == 0, (tmp_path / "s.log").read_text()
        for c in clients:  # the forgers too: a refusal is not a crash
            assert c.wait(timeout=30) == 0
    finally:
        stop(server, *clients)
    rounds = records(out / "metrics.jsonl")
    assert [r["clients_completed"] for r in rounds] == [3, 3, 3], rounds
    assert not any(r["aborted"] for r in rounds)
    for r in rounds:
        reasons = sorted(r["failures"])
        assert reasons[0].startswith("3: rejected: expected a top-0.05 sparse update"), reasons
        assert reasons[1].startswith("4: rejected: expected a top-0.05 sparse update"), reasons
        assert "keys missing" in reasons[1]


def test_a_device_started_with_attack_poisons_fedavg_and_a_median_server_holds(tmp_path):
    """`shoal client --attack sign-flip` on one device of five, against FedAvg and against
    the coordinate-wise median: the same hostile device, two servers."""
    base = CONFIG.replace("rounds = 8", "rounds = 4").replace("num_clients = 4", "num_clients = 5")
    base = base.replace("clients_per_round = 3", "clients_per_round = 5")
    accuracy = {}
    for aggregator in ("mean", "median"):
        config, out = tmp_path / f"{aggregator}.toml", tmp_path / aggregator
        attackers = 1 if aggregator == "median" else 0
        config.write_text(
            base.replace("[strategy]", f'[strategy]\naggregator = "{aggregator}"\nattackers = {attackers}')
        )
        address = f"127.0.0.1:{free_port()}"
        server = _server(
            config, out, address, "--min-clients", "5", "--round-timeout", "30", log=tmp_path / "s.log"
        )
        clients = [_client(config, address, c, tmp_path / f"c{c}.log") for c in "0123"]
        clients.append(_client(config, address, "4", tmp_path / "c4.log", "--attack", "sign-flip"))
        try:
            assert server.wait(timeout=120) == 0, (tmp_path / "s.log").read_text()
            for c in clients:
                assert c.wait(timeout=30) == 0
        finally:
            stop(server, *clients)
        rounds = records(out / "metrics.jsonl")
        assert [r["clients_completed"] for r in rounds] == [5, 5, 5, 5]
        assert all(r["hostile_sum"] == 1 for r in rounds)  # the hostile device reported itself
        accuracy[aggregator] = rounds[-1]["test_accuracy"]
    assert accuracy["mean"] < 0.3 < 0.7 < accuracy["median"], accuracy
