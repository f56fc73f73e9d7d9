"""Personal layers over the network: three `shoal client` processes, each with its own
label-skewed data, train FedPer against a `shoal server`; their heads stay on the devices."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from shoal.config.names import PersonalizationName
from shoal.data import digits as load_digits
from shoal.models import mlp
from shoal.params import load_params
from shoal.personal.layers import personal_mask, personal_names
from shoal.runtime import initial_params
from tests.net.procs import free_port, records, shoal, stop

pytestmark = pytest.mark.slow

CONFIG = """rounds = 4
seed = 5
[data]
dataset = "digits"
input_shape = [1, 8, 8]
num_classes = 10
holdout_fraction = 0.25
[model]
name = "mlp"
hidden = [16]
[strategy]
clients_per_round = 3
max_num_examples = 1000
[trainer]
lr = 0.3
local_epochs = 2
batch_size = 8
[personalization]
method = "fedper"
[eval]
eval_every = 0
federated_eval_every = 1
federated_eval_clients = 3
"""


def test_personal_layers_stay_on_devices_over_grpc(tmp_path):
    digits = load_digits(test_fraction=0.2, seed=0)
    x, y = digits.train.x.numpy(), digits.train.y.numpy()
    homes = []
    for i, labels in enumerate(((0, 1, 2), (3, 4, 5, 6), (7, 8, 9))):  # each device: its own labels
        keep = np.isin(y, labels)
        homes.append(tmp_path / f"device-{i}.npz")
        np.savez(homes[-1], x=x[keep], y=y[keep])
    config = tmp_path / "fedper.toml"
    config.write_text(CONFIG)
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
    rows = records(out / "metrics.jsonl")
    assert len(rows) == 4 and all(r["clients_completed"] == 3 for r in rows)
    last = rows[-1]
    assert last["fed_eval_clients"] == 3
    # each device's own head on its own three or four labels beats the shared global head
    assert last["fed_eval_accuracy"] > last["fed_eval_global_accuracy"] + 0.2
    model = functools.partial(mlp, (1, 8, 8), 10, (16,))
    start, spec = initial_params(model, 5)
    final = load_params(out / "model.safetensors", spec)
    mask = personal_mask(spec, personal_names(spec, PersonalizationName.FEDPER, ()))
    np.testing.assert_array_equal(final[mask], start[mask])  # no head ever reached the server
    assert not np.array_equal(final[~mask], start[~mask])
