"""What a client may claim: the poisoned update of the outside test, refused in simulation."""

from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal import metrics
from shoal.client import TorchTrainer
from shoal.config import StrategyConfig
from shoal.messages import TrainResult
from shoal.metrics import declare, reduce_metrics
from shoal.runtime.validation import ResultLimits, check_claims


class Poisoner:
    """Client "0" sends a finite but huge update and claims 10^9 examples."""

    def __init__(self, inner):
        self.inner = inner

    def train(self, task, data, state):
        r = self.inner.train(task, data, state)
        if task.client_id != "0":
            return r
        evil = np.full_like(r.payload["delta"], 3e38)
        return TrainResult(r.round, r.client_id, 10**9, {"delta": evil}, r.metrics)

    def evaluate(self, task, data, state):
        return self.inner.evaluate(task, data)


class PoisonBuilder:
    def build(self, model):
        return Poisoner(TorchTrainer(lr=0.3, local_epochs=2, batch_size=16).build(model))


def test_one_poisoned_client_costs_only_its_own_update(small_mlp, fed_digits):
    strategy = shoal.FedAvg(clients_per_round=len(fed_digits))  # the poisoner is in every round
    clean = shoal.simulate(small_mlp, fed_digits, shoal.FedAvg(clients_per_round=len(fed_digits)),
                           TorchTrainer(lr=0.3, local_epochs=2, batch_size=16), rounds=3)  # fmt: skip
    history = shoal.simulate(small_mlp, fed_digits, strategy, PoisonBuilder(), rounds=3)
    assert all(r["clients_failed"] == 1 for r in history.records)
    assert "claims 1000000000 examples" in history.records[0]["failures"][0]
    assert history.final_accuracy is not None and history.final_accuracy > clean.final_accuracy - 0.1


def test_claims_above_the_cap_or_the_norm_bound_are_refused():
    r = TrainResult(1, "a", 50, {"delta": np.full(4, 3.0, np.float32)})
    assert check_claims(r, ResultLimits()) is None
    assert "cap is 40" in (check_claims(r, ResultLimits(max_num_examples=40)) or "")
    assert "norm 6 exceeds the bound 5" in (check_claims(r, ResultLimits(max_update_norm=5.0)) or "")
    assert check_claims(r, ResultLimits(max_num_examples=50, max_update_norm=6.0)) is None


def test_the_default_cap_is_the_largest_clients_training_set():
    limits = StrategyConfig().limits([10, 250, 30])
    assert limits == ResultLimits(max_num_examples=250)
    assert StrategyConfig(max_num_examples=5, max_update_norm=2.0).limits([10]) == ResultLimits(5, 2.0)
    with pytest.raises(shoal.ConfigError, match="max_update_norm"):
        StrategyConfig(max_update_norm=0.0)


def test_client_metrics_reach_the_record_with_their_declared_reducer(small_mlp, fed_digits, monkeypatch):
    class F1:  # a user's client that reports its own metric
        def __init__(self, inner):
            self.inner = inner

        def train(self, task, data, state):
            r = self.inner.train(task, data, state)
            extra = {"f1": 0.5, "peak_mb": float(task.client_id)}
            return TrainResult(r.round, r.client_id, r.num_examples, r.payload, {**r.metrics, **extra})

        def evaluate(self, task, data, state):
            return self.inner.evaluate(task, data)

    class Builder:
        def build(self, model):
            return F1(TorchTrainer().build(model))

    monkeypatch.setattr(metrics, "_DECLARED", dict(metrics._DECLARED))
    declare("peak_mb", "max")
    everyone = shoal.FedAvg(clients_per_round=len(fed_digits))
    record = shoal.simulate(small_mlp, fed_digits, everyone, Builder(), rounds=1).records[0]
    assert record["f1"] == pytest.approx(0.5) and record["local_steps"] > 0
    assert record["peak_mb_max"] == max(float(c) for c in fed_digits.client_ids)
    with pytest.raises(shoal.ConfigError, match="choose"):
        declare("x", "median-ish")


def test_reducers_fold_by_examples_by_default():
    rs = [
        TrainResult(1, "a", 1, {}, {"train_loss": 1.0, "example_epsilon": 2.0}),
        TrainResult(1, "b", 3, {}, {"train_loss": 3.0, "example_epsilon": 1.0, "flag": True}),
    ]
    assert reduce_metrics(rs) == {"train_loss": 2.5, "example_epsilon_max": 2.0}
