"""``shoal new NAME``: a small project that runs at once and is yours to change.

The project holds a model, a loader for local files, a client, a config, a README, a test
and a small CSV dataset (made here, so nothing is downloaded): ``cd NAME && shoal run``
trains it in simulation, and the same folder serves ``shoal server`` / ``shoal client``,
each device reading its own folder (three are made under ``devices/`` for a first try).
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import numpy as np

from shoal.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")

CONFIG = """\
# {name}: a shoal project. From this folder:
#   shoal run                      train in simulation (this file is found on its own)
#   shoal run --rounds 3 --lr 0.05 any key can be overridden by a flag
# Every name below that holds a ':' is an import path into this project's code.
rounds = 10
seed = 0
client = "{pkg}.client:build"

[data]
dataset = "{pkg}.data:load"   # your loader: returns one LabeledData (cut into clients below)
path = "data"                  # the folder it reads in simulation, relative to this file
num_clients = 20
partition = "dirichlet"        # how the one dataset is cut into clients, for experiments
dirichlet_alpha = 1.0
input_shape = [8]              # one example's shape and the classes: a deployed server builds
num_classes = 4                # the model from these, since it never sees the devices' data
holdout_fraction = 0.2         # each client's share kept for federated evaluation

[eval]
federated_eval_every = 1       # the devices test each round's model on their held-out share

[model]
name = "{pkg}.model:Net"
hidden = [32]

[strategy]
name = "fedavg"                # or your own: "{pkg}.strategy:MyStrategy"
clients_per_round = 5
max_num_examples = 10000       # the most examples one device may claim (results are weighted by it)

[trainer]
lr = 0.1
local_epochs = 2
batch_size = 16
"""

MODEL = '''\
"""The model every client trains: change it freely (shoal only needs an nn.Module)."""

from __future__ import annotations

import math

from torch import nn


class Net(nn.Module):
    """An MLP; shoal passes the data's input_shape and num_classes, and [model] hidden."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (32,)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)
'''

DATA = '''\
"""Your data: a loader for files on disk.

``load`` reads ``train.csv`` (every column a feature but ``label``) from the folder that
``[data] path`` names, relative to the project, and returns it as one dataset, which
shoal cuts into clients as ``[data] partition`` says. Replace it with your own reader:
return a ``LabeledData`` (one dataset) or a ``FederatedDataset`` (your own clients).
"""

from __future__ import annotations

from pathlib import Path

from shoal.data import LabeledData, load_csv

PROJECT = Path(__file__).resolve().parents[1]


def load(path: str = "data", seed: int = 0, test_fraction: float = 0.2) -> LabeledData:
    folder = Path(path) if Path(path).is_absolute() else PROJECT / path
    return load_csv(folder / "train.csv", "label", test_fraction, seed)
'''

CLIENT = '''\
"""What each device runs. Today: shoal's default trainer with the [trainer] settings.

To change local training, return your own ClientApp here: any object with
``train(task, data, state) -> TrainResult`` and ``evaluate(task, data, state) -> EvalResult``
(see shoal.client.ClientApp), or subclass shoal.client.TorchClient.
"""

from __future__ import annotations

from shoal.client import ClientApp, TorchTrainer
from shoal.models import ModelFactory


def build(model: ModelFactory, trainer: TorchTrainer) -> ClientApp:
    return trainer.build(model)
'''

TEST = '''\
"""The project trains: one short run in simulation from its own config."""

from __future__ import annotations

from pathlib import Path

from shoal import config, experiment

HERE = Path(__file__).resolve().parents[1]


def test_one_round_learns_something(tmp_path):
    cfg = config.load(HERE / "shoal.toml")
    history = experiment.run(cfg, tmp_path / "run")
    assert history.final_accuracy is not None and history.final_accuracy > 1.5 / 4  # 4 classes
'''

README = """\
# {name}

A federated learning project made with `shoal new`.

```bash
shoal run                      # train in simulation; the report lands in runs/<time>/report.html
python -m pytest tests         # the project's test
```

- `{pkg}/model.py`: the model (an `nn.Module`).
- `{pkg}/data.py`: the loader for your files (`data/train.csv` is a small made-up set).
- `{pkg}/client.py`: what each device runs (shoal's trainer until you change it).
- `shoal.toml`: the run; every key is also a flag (`shoal run --help`).

Deploy the same folder over the network. Each device trains on its own folder
(`--data`), read by `{pkg}/data.py`; the server never loads any of it. Three device
folders are under `devices/` to try it on one machine:

```bash
shoal certs certs --clients 0,1,2
shoal server --config shoal.toml --min-clients 3 --clients-per-round 3 \\
  --cert certs/server.pem --key certs/server.key --ca certs/ca.pem &
for i in 0 1 2; do shoal client --config shoal.toml --client-id $i --server 127.0.0.1:8443 \\
  --data devices/$i --ca certs/ca.pem --cert certs/client-$i.pem --key certs/client-$i.key & done; wait
```
"""


def package_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"project name {name!r}: use a letter, then letters, digits, '-' or '_' (at most 64)"
        )
    pkg = name.replace("-", "_").lower()
    if keyword.iskeyword(pkg) or pkg in ("shoal", "torch", "numpy", "tests", "data"):
        raise ConfigError(f"project name {name!r} would shadow the module {pkg!r}; pick another name")
    return pkg


def sample_csvs(sizes: list[int], features: int = 8, classes: int = 4, seed: int = 0) -> list[str]:
    """Small tabular sets from one task (Gaussian blobs, one per class), in CSV with a
    ``label`` column: one set per size."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (classes, features))
    header = ",".join([*(f"x{i}" for i in range(features)), "label"])
    texts = []
    for rows in sizes:
        labels = rng.integers(0, classes, rows)
        x = centres[labels] + rng.normal(0, 1.5, (rows, features))
        cells = [[*(f"{v:.4f}" for v in row), str(int(y))] for row, y in zip(x, labels, strict=True)]
        lines = [",".join(c) for c in cells]
        texts.append("\n".join([header, *lines]) + "\n")
    return texts


def new_project(name: str, parent: Path) -> Path:
    """Write the project ``name`` into ``parent / name``; refuse a folder that exists."""
    pkg = package_name(name)
    root = parent / name
    if root.exists():
        raise ConfigError(f"{root} already exists; pick another name or remove it")
    files = {
        "shoal.toml": CONFIG.format(name=name, pkg=pkg),
        "README.md": README.format(name=name, pkg=pkg),
        f"{pkg}/__init__.py": f'"""{name}: model, data and client of a shoal project."""\n',
        f"{pkg}/model.py": MODEL,
        f"{pkg}/data.py": DATA,
        f"{pkg}/client.py": CLIENT,
        "tests/test_project.py": TEST,
    }
    shared, *devices = sample_csvs([1200, 300, 300, 300])
    files["data/train.csv"] = shared  # the simulation's one dataset
    files.update({f"devices/{i}/train.csv": text for i, text in enumerate(devices)})  # a device's own
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
