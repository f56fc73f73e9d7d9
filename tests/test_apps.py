"""Your own model, data, strategy, transform and client by import path, and every way it can fail."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from shoal import config as c
from shoal import experiment
from shoal.errors import ConfigError

PROJECT = '''
import numpy as np
import torch
from torch import nn

import shoal
from shoal.data import LabeledData, ArrayDataset


class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))

    def forward(self, x):
        return self.body(x)


def load(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (300, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    train, test = ArrayDataset.from_numpy(x[:240], y[:240]), ArrayDataset.from_numpy(x[240:], y[240:])
    return LabeledData("mine", train, test, 2)


class Half(shoal.FedAvg):
    """A user's strategy: FedAvg that takes half the step."""

    def apply(self, params, results):
        return params + 0.5 * (super().apply(params, results) - params)


class Tag(shoal.UpdateTransform):
    def client_apply(self, result, ctx):
        return result

    def server_apply(self, results, ctx):
        return list(results)


def client(model, trainer):
    return trainer.build(model)


def seen(clients_per_round, server_momentum, beta1):
    strategy = shoal.FedAvg(clients_per_round=clients_per_round)
    strategy.seen = (server_momentum, beta1)
    return strategy


not_a_model = 3


def a_list(num_classes):
    return [num_classes]


def needs_more(input_shape, flavour):
    return Net(input_shape, 2)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "shoal.toml").write_text("")
    (tmp_path / "myproj").mkdir()
    (tmp_path / "myproj" / "__init__.py").write_text("")
    (tmp_path / "myproj" / "app.py").write_text(textwrap.dedent(PROJECT))
    (tmp_path / "myproj" / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "myproj" or m.startswith("myproj.")]:
        monkeypatch.delitem(sys.modules, name)  # each test imports its own project afresh
    yield tmp_path


def cfg(**sections):
    base = {
        "rounds": 2,
        "data": {"dataset": "myproj.app:load", "num_clients": 6},
        "model": {"name": "myproj.app:Net"},
        "strategy": {"clients_per_round": 3},
        "trainer": {"lr": 0.2, "local_epochs": 1, "batch_size": 16},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return c.from_dict(base)


def test_a_project_of_user_code_trains_and_resumes_like_the_builtins(project, tmp_path):
    run = cfg(strategy={"name": "myproj.app:Half"}, transforms=["myproj.app:Tag"], client="myproj.app:client")
    history = experiment.run(run, tmp_path / "out")
    assert history.final_accuracy is not None and history.final_accuracy > 0.6
    assert type(experiment.build(run, None).strategy).__name__ == "Half"
    again = c.load(tmp_path / "out" / "config.toml")  # import paths survive the run folder's config
    assert again.model.name == "myproj.app:Net" and again.client == "myproj.app:client"
    assert np.isfinite(history.params).all()


def test_a_users_strategy_gets_the_strategy_keys_it_declares(project):
    run = cfg(strategy={"name": "myproj.app:seen", "server_momentum": 0.5, "beta1": 0.8})
    assert experiment.build(run, None).strategy.seen == (0.5, 0.8)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"model": {"name": "nowhere.mod:Net"}}, "no module 'nowhere.mod' in the project folder"),
        ({"model": {"name": "myproj.app:Nett"}}, "'myproj.app' has no attribute 'Nett'; it defines"),
        ({"model": {"name": "myproj.app:not_a_model"}}, "is a int, not a class or a function"),
        ({"model": {"name": "myproj.app:a_list"}}, "returned a list; model.name needs a Module"),
        ({"model": {"name": "myproj.app:needs_more"}}, "needs flavour, which shoal does not provide"),
        ({"model": {"name": "myproj.broken:Net"}}, "raised RuntimeError: boom at import"),
        ({"data": {"dataset": "myproj.app:Net"}}, "needs input_shape, num_classes"),
        ({"strategy": {"name": "myproj.app:Tag"}}, "returned a Tag; strategy.name needs a Strategy"),
    ],
)
def test_each_import_path_error_names_the_path_and_the_fix(project, sections, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        experiment.build(cfg(**sections), None).run(1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"name": "not a path"}}, "choose one of .* or an import path"),
        ({"model": {"name": "a.b:"}}, "neither a built-in name nor an import path"),
        ({"client": "myproj.app"}, "neither a built-in name nor an import path"),
        ({"transforms": ["x:y z"]}, "neither a built-in name nor an import path"),
    ],
)
def test_a_malformed_name_is_refused_when_the_config_loads(raw, message):
    with pytest.raises(ConfigError, match=message):
        c.from_dict(raw)
