"""Real processes on 127.0.0.1: `shoal server` and `shoal client` over mutual TLS, and a
server killed with SIGKILL mid-run that resumes to the same model as the simulation."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from shoal.cli import main
from shoal.net.certs import make_certs
from tests.net.procs import CONFIG, free_port
from tests.net.procs import shoal as _shoal

pytestmark = pytest.mark.slow


def _hash(text: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith("model hash:"))


def test_server_killed_mid_run_resumes_and_devices_reconnect(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"], ["0", "1", "2", "3"])
    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    serve = ["server", "--config", str(config), "--address", address, "--out", str(out), "--quiet"]
    serve.append("--experiment")
    serve += [
        "--cert",
        str(certs / "server.pem"),
        "--key",
        str(certs / "server.key"),
        "--ca",
        str(certs / "ca.pem"),
    ]
    serve += ["--min-clients", "4"]  # every device in before a round: selection then matches the simulation
    server = _shoal(*serve, log=tmp_path / "s1.log")

    def client(c: str) -> subprocess.Popen[bytes]:
        args = ["client", "--server", address, "--config", str(config), "--client-id", c, "--experiment"]
        args += ["--ca", str(certs / "ca.pem"), "--cert", str(certs / f"client-{c}.pem")]
        args += ["--key", str(certs / f"client-{c}.key")]
        return _shoal(*args, log=tmp_path / f"c{c}.log")

    clients = [client(c) for c in "0123"]
    metrics = out / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once a few rounds are checkpointed
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        done_before = len(metrics.read_text().splitlines())
        assert 3 <= done_before < 8, (tmp_path / "s1.log").read_text()
        restarted = _shoal(*serve, "--resume", log=tmp_path / "s2.log")
        assert restarted.wait(timeout=120) == 0, (tmp_path / "s2.log").read_text()
        for c in clients:
            assert c.wait(timeout=60) == 0
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.kill()
    networked = _hash((tmp_path / "s2.log").read_text())
    assert len([json.loads(line) for line in metrics.read_text().splitlines()]) == 8
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "sim"), "--quiet"]) == 0
    assert networked == _hash(capsys.readouterr().out)


def test_killed_and_frozen_devices_cost_their_updates_not_the_run(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.replace("rounds = 8", "rounds = 4").replace("num_clients = 4", "num_clients = 8")
                      .replace("clients_per_round = 3", "clients_per_round = 8"))  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    serve = [
        "server",
        "--config",
        str(config),
        "--address",
        address,
        "--out",
        str(out),
        "--quiet",
        "--insecure",
        "--experiment",
    ]
    server = _shoal(*serve, "--min-clients", "8", "--round-timeout", "12", log=tmp_path / "s.log")
    clients = {
        c: _shoal("client", "--server", address, "--config", str(config), "--client-id", c, "--insecure",
                  "--experiment",
                  log=tmp_path / f"c{c}.log")
        for c in "01234567"
    }  # fmt: skip
    metrics = out / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().strip()):
            time.sleep(0.05)
        clients["0"].send_signal(signal.SIGKILL)
        clients["1"].send_signal(signal.SIGKILL)
        clients["2"].send_signal(signal.SIGSTOP)  # alive, connected, silent
        start = time.monotonic()
        assert server.wait(timeout=90) == 0, (tmp_path / "s.log").read_text()
        took = time.monotonic() - start
    finally:
        clients["2"].send_signal(signal.SIGCONT)
        for p in [server, *clients.values()]:
            if p.poll() is None:
                p.kill()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(records) == 4 and not any(r["aborted"] for r in records)
    # after the kills every round commits with the five live devices, each within its deadline
    assert [r["clients_completed"] for r in records[-2:]] == [5, 5]
    assert all(r["wall_time"] < 12 + 3 for r in records) and took < 4 * 15 + 20
