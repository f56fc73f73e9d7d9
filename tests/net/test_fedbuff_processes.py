"""FedBuff over the network: a real server steps every K results on the wall clock while
the other devices keep training on older models, and the run finishes."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from tests.net.procs import CONFIG, free_port, records, shoal, stop, wait_for

pytestmark = pytest.mark.slow


def test_fedbuff_runs_on_shoal_server_with_devices_still_training_between_steps(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        CONFIG.replace("rounds = 8", "rounds = 12").replace("num_clients = 4", "num_clients = 5")
    )
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    args = ["server", "--config", str(config), "--address", address, "--out", str(out), "--quiet"]
    args += [
        "--insecure",
        "--experiment",
        "--strategy-name",
        "fedbuff",
        "--buffer-size",
        "2",
        "--round-timeout",
        "5",
    ]
    server = shoal(*args, "--clients-per-round", "4", "--min-clients", "5", log=tmp_path / "server.log")
    clients = [
        shoal("client", "--server", address, "--config", str(config), "--client-id", c, "--insecure",
              "--experiment", "--give-up", "60", log=tmp_path / f"c{c}.log")
        for c in "01234"
    ]  # fmt: skip
    try:
        # device "4" freezes after the first step: the steps go on with the others
        wait_for(lambda: len(records(out / "metrics.jsonl")) >= 1, 120, "the first server step")
        os.kill(clients[4].pid, signal.SIGSTOP)
        assert server.wait(timeout=240) == 0, (tmp_path / "server.log").read_text()
    finally:
        for c in clients:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGCONT)
        stop(server, *clients)
    steps = records(out / "metrics.jsonl")
    assert len(steps) == 12
    assert all(r["clients_completed"] <= 2 for r in steps)  # a step per K results
    assert sum(r["clients_selected"] for r in steps) > 4  # freed slots were filled again
    assert steps[-1]["test_accuracy"] > 0.3
