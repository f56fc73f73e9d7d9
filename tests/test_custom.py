"""docs/custom.md's project, run as a user would: its code blocks become a project folder,
its ``shoal.toml`` loads, and its strategy and client metrics reach metrics.jsonl and the report."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal import config as c
from shoal import experiment, metrics
from shoal.errors import ConfigError
from shoal.report import render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "custom.md"

# A test's own client around the docs' one: it keeps what every client sent, so the
# folded metrics and the strategy's step can be recomputed from them.
SPY = """
from myproj.client import build as measured

SENT = []  # (round, num_examples, metrics, params, delta) for every result


class Spy:
    def __init__(self, app):
        self.app = app

    def train(self, task, data, state):
        result = self.app.train(task, data, state)
        delta = result.payload["delta"]
        SENT.append((task.round, result.num_examples, dict(result.metrics), task.params, delta))
        return result

    def evaluate(self, task, data, state):
        return self.app.evaluate(task, data, state)


def build(model, trainer):
    return Spy(measured(model, trainer))
"""

# A client whose metric names are keys the server writes itself.
CLASH = """
import dataclasses


class Clash:
    def __init__(self, app):
        self.app = app

    def train(self, task, data, state):
        result = self.app.train(task, data, state)
        extra = {"test_accuracy": 0.125, "clients_selected": 99, "round": 7, "bytes_up": 1}
        return dataclasses.replace(result, metrics={**result.metrics, **extra})

    def evaluate(self, task, data, state):
        return self.app.evaluate(task, data, state)


def build(model, trainer):
    return Clash(trainer.build(model))
"""


def docs_files() -> dict[str, str]:
    """Each ```python and ```toml block of docs/custom.md, by the path its first line names."""
    files = {}
    for lang, body in re.findall(r"```(python|toml)\n(.*?)```", DOCS.read_text(), flags=re.S):
        first, _, rest = body.partition("\n")
        assert first.startswith("# "), f"a {lang} block in {DOCS.name} does not start with '# path': {first}"
        files[first[2:].strip()] = body if lang == "toml" else rest
    return files


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ours = {"myproj/__init__.py": "", "myproj/spy.py": SPY, "myproj/clash.py": CLASH}
    for path, text in {**docs_files(), **ours}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(textwrap.dedent(text))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "myproj" or m.startswith("myproj.")]:
        monkeypatch.delitem(sys.modules, name)  # each test imports its project afresh
    monkeypatch.setattr(metrics, "_DECLARED", dict(metrics.reducers()))  # the docs' declare stays here
    return tmp_path


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def docs_config(project: Path, **changes: Any) -> c.RunConfig:
    return dataclasses.replace(c.load(project / "shoal.toml"), **changes)


def test_every_code_block_of_the_docs_is_a_project_file() -> None:
    assert set(docs_files()) == {"shoal.toml", "myproj/strategy.py", "myproj/client.py"}


def test_the_docs_project_trains_and_its_metrics_reach_the_log_and_the_report(project: Path) -> None:
    history = experiment.run(docs_config(project), project / "run")
    assert type(experiment.build(docs_config(project), None).strategy).__name__ == "Median"
    assert history.final_accuracy is not None and history.final_accuracy > 0.8
    logged = records(project / "run")
    assert len(logged) == 5
    for r in logged:
        assert 0.0 < r["f1"] <= 1.0 and r["peak_memory_mb_max"] > 0
        assert "peak_memory_mb" not in r  # declared "max": only under its reducer's key
    assert logged[-1]["f1"] > logged[0]["f1"]  # the clients fit their data better as the model trains
    page = render(project / "run").read_text()
    others = page.split("<h2>Other metrics</h2>", 1)[1].split("<h2>Configuration</h2>", 1)[0]
    for key in ("f1", "peak_memory_mb_max", "local_steps"):
        assert f"<!-- {key} -->" in others, key  # matplotlib writes each text as an SVG comment
    assert "<!-- train_loss -->" not in others  # already on the loss plot


def test_each_round_folds_what_its_clients_sent_by_the_declared_reducers(project: Path) -> None:
    experiment.run(docs_config(project, rounds=2, client="myproj.spy:build"), project / "run")
    sent = sys.modules["myproj.spy"].SENT
    for r in records(project / "run"):
        mine = [(n, m) for rnd, n, m, _, _ in sent if rnd == r["round"]]
        assert len(mine) == r["clients_completed"] == 5
        f1 = sum(n * m["f1"] for n, m in mine) / sum(n for n, _ in mine)
        assert r["f1"] == pytest.approx(f1, rel=1e-12)
        assert r["peak_memory_mb_max"] == max(m["peak_memory_mb"] for _, m in mine)


def _round_one(sent: list[Any]) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    first = [s for s in sent if s[0] == 1]
    return first[0][3], [s[1] for s in first], [s[4] for s in first]


def test_the_median_strategy_steps_by_the_median_where_fedavg_takes_the_mean(project: Path) -> None:
    experiment.run(docs_config(project, rounds=2, client="myproj.spy:build"), project / "median")
    sent = list(sys.modules["myproj.spy"].SENT)
    params, _, deltas = _round_one(sent)
    after_one = next(s[3] for s in sent if s[0] == 2)  # what round 2 trained from
    median = np.median(np.stack(deltas), axis=0)
    np.testing.assert_allclose(after_one, params + median, rtol=0, atol=1e-6)

    sys.modules["myproj.spy"].SENT.clear()
    strategy = dataclasses.replace(docs_config(project).strategy, name="fedavg")
    fedavg = experiment.run(
        docs_config(project, rounds=1, client="myproj.spy:build", strategy=strategy), project / "fedavg"
    )
    same_params, sizes, same_deltas = _round_one(sys.modules["myproj.spy"].SENT)
    np.testing.assert_array_equal(same_params, params)  # the same clients, trained the same way
    for a, b in zip(same_deltas, deltas, strict=True):
        np.testing.assert_array_equal(a, b)
    mean = np.average(np.stack(deltas), axis=0, weights=sizes)
    np.testing.assert_allclose(fedavg.params, params + mean, rtol=0, atol=1e-6)
    assert np.abs(median - mean).max() > 1e-3  # the two rules part ways on these updates


def test_the_median_strategy_resumes_with_its_momentum(project: Path) -> None:
    straight = experiment.run(docs_config(project), project / "straight")
    experiment.run(docs_config(project, rounds=2), project / "resumed")
    resumed = experiment.resume(project / "resumed", rounds=5)
    np.testing.assert_array_equal(resumed.params, straight.params)


def test_a_client_metric_named_like_a_server_key_is_kept_beside_it(project: Path) -> None:
    with pytest.warns(RuntimeWarning) as caught:
        experiment.run(docs_config(project, rounds=1, client="myproj.clash:build"), project / "clash")
    renamed = sorted(re.findall(r"is recorded as '(\w+)'", " ".join(str(w.message) for w in caught)))
    assert renamed == ["client_bytes_up", "client_clients_selected", "client_round", "client_test_accuracy"]
    experiment.run(docs_config(project, rounds=1, client=None), project / "plain")  # the same training
    ((clash,), (plain,)) = records(project / "clash"), records(project / "plain")
    for key in ("round", "clients_selected", "test_accuracy"):
        assert clash[key] == plain[key], key  # the server's values, untouched
    assert clash["bytes_up"] > plain["bytes_up"]  # the server's count: the extra metrics travel too
    assert clash["client_test_accuracy"] == 0.125 and clash["client_clients_selected"] == 99
    assert clash["client_round"] == 7 and clash["client_bytes_up"] == 1
    assert "<!-- client_test_accuracy -->" in render(project / "clash").read_text()


def test_a_strategy_that_leaves_a_method_out_is_refused_with_its_path(project: Path) -> None:
    (project / "myproj" / "half.py").write_text(
        "from shoal.strategy import Strategy\n\n\n"
        "class Half(Strategy):\n"
        "    def configure_train(self, ctx, params, available):\n"
        "        return []\n"
    )
    strategy = dataclasses.replace(docs_config(project).strategy, name="myproj.half:Half")
    message = "strategy.name = 'myproj.half:Half' is an abstract class: it does not define aggregate_train"
    with pytest.raises(ConfigError, match=re.escape(message)):
        experiment.build(docs_config(project, strategy=strategy), None)
