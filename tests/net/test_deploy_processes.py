"""A user's own project, deployed: devices train on folders that only they hold.

`shoal new demo`; `shoal run` trains it in simulation; then the same folder runs
`shoal server` and three `shoal client --data <own folder>` processes. The project's data
is moved out of the server's view first, so the run can only finish if the server never
needs it; devices are enrolled by token under ids that no dataset derives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shoal.data import digits as load_digits
from shoal.net.auth import token_digest
from tests.net.procs import free_port, records, shoal, stop

pytestmark = pytest.mark.slow

DEVICES = ("phone-a", "phone-b", "sensor-c")


def test_a_new_project_trains_in_simulation_then_on_devices_with_their_own_data(tmp_path):
    new = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "new", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert new.returncode == 0, new.stderr
    project = tmp_path / "demo"
    sim = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", "--rounds", "2", "--quiet", "--out", tmp_path / "sim"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert json.loads((tmp_path / "sim" / "summary.json").read_text())["rounds"] == 2

    # Each device's data goes to a folder of its own, outside the project; the server's
    # view of the project keeps the code and the config, and no data at all.
    homes = {}
    for i, device in enumerate(DEVICES):
        homes[device] = tmp_path / "devices" / device
        shutil.copytree(project / "devices" / str(i), homes[device])
    shutil.rmtree(project / "devices")
    shutil.rmtree(project / "data")
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{d} {token_digest('secret-' + d)}\n" for d in DEVICES))

    address, out = f"127.0.0.1:{free_port()}", tmp_path / "served"
    server = shoal(
        "server", "--config", "shoal.toml", "--address", address, "--out", str(out), "--quiet",
        "--insecure", "--tokens", str(tokens), "--min-clients", "3", "--rounds", "2",
        "--round-timeout", "60", log=tmp_path / "server.log", cwd=project,
    )  # fmt: skip
    clients = []
    for device, home in homes.items():
        token = home.parent / f"{device}.token"
        token.write_text(f"secret-{device}\n")
        args = ["client", "--server", address, "--config", "shoal.toml", "--client-id", device]
        args += ["--data", str(home), "--token-file", str(token), "--insecure", "--give-up", "120"]
        clients.append(shoal(*args, log=tmp_path / f"{device}.log", cwd=project))
    # an intruder: an enrolled id with the wrong token, from a folder of its own
    wrong = tmp_path / "stolen.token"
    wrong.write_text("guessed\n")
    args = ["client", "--server", address, "--config", "shoal.toml", "--client-id", DEVICES[0]]
    args += ["--data", str(homes[DEVICES[1]]), "--token-file", str(wrong), "--insecure", "--give-up", "60"]
    intruder = shoal(*args, log=tmp_path / "intruder.log", cwd=project)
    try:
        assert intruder.wait(timeout=120) == 2  # refused at once, named
        assert "the server refused this device" in (tmp_path / "intruder.log").read_text()
        assert server.wait(timeout=300) == 0, (tmp_path / "server.log").read_text()
        for c in clients:
            assert c.wait(timeout=60) == 0
    finally:
        stop(server, *clients, intruder)
    rounds = records(out / "metrics.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["clients_completed"] == 3 for r in rounds)
    # the server has no test set of its own here: the devices' held-out shares score the model
    assert rounds[-1]["fed_eval_clients"] == 3 and rounds[-1]["fed_eval_accuracy"] > 0.5
    assert not (project / "data").exists() and not (project / "devices").exists()


SKLEARN = """rounds = 2
seed = 0
client = "shoal.client.sklearn:sgd_classifier"
[data]
dataset = "digits"
input_shape = [1, 8, 8]
num_classes = 10
test_path = "{test}"
[model]
name = "mlp"
hidden = []
[strategy]
clients_per_round = 3
max_num_examples = 1000
[trainer]
lr = 0.01
local_epochs = 2
weight_decay = 0.0001
"""


def test_a_scikit_learn_client_trains_on_devices_with_their_own_arrays(tmp_path):
    digits = load_digits(test_fraction=0.2, seed=0)
    x, y = digits.train.x.numpy(), digits.train.y.numpy()
    homes = []
    for i, part in enumerate(np.array_split(np.arange(len(y)), 3)):  # one .npz a device
        homes.append(tmp_path / f"device-{i}.npz")
        np.savez(homes[-1], x=x[part], y=y[part])
    np.savez(tmp_path / "server-test.npz", x=digits.test.x.numpy(), y=digits.test.y.numpy())
    config = tmp_path / "sklearn.toml"
    config.write_text(SKLEARN.format(test=tmp_path / "server-test.npz"))
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "out"
    server = shoal(
        "server", "--config", str(config), "--address", address, "--out", str(out), "--quiet", "--insecure",
        "--min-clients", "3", log=tmp_path / "server.log",
    )  # fmt: skip
    clients = [
        shoal("client", "--server", address, "--config", str(config), "--client-id", f"d{i}", "--data",
              str(home), "--insecure", "--give-up", "120", log=tmp_path / f"d{i}.log")
        for i, home in enumerate(homes)
    ]  # fmt: skip
    try:
        assert server.wait(timeout=300) == 0, (tmp_path / "server.log").read_text()
    finally:
        stop(server, *clients)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["final_test_accuracy"] > 0.6  # the server's own test set
    assert all(r["clients_completed"] == 3 for r in records(out / "metrics.jsonl"))
