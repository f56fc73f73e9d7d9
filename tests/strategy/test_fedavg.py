from __future__ import annotations

import numpy as np
import pytest

from shoal.errors import ConfigError, RoundAbortedError
from shoal.messages import Failure, FailureKind, TrainResult
from shoal.strategy import FedAvg, RoundContext
from shoal.strategy.server_opt import ServerSGD

IDS = [str(i) for i in range(50)]
P = np.zeros(4, np.float32)


def result(cid: str, delta, n: int) -> TrainResult:
    return TrainResult(1, cid, n, {"delta": np.asarray(delta, np.float32)})


def test_selects_count_or_fraction_without_repeats():
    tasks = FedAvg(clients_per_round=7).configure_train(RoundContext(1, 0), P, IDS)
    assert len({t.client_id for t in tasks}) == 7
    assert len(FedAvg(fraction=0.1).configure_train(RoundContext(1, 0), P, IDS)) == 5
    assert len(FedAvg(clients_per_round=80).configure_train(RoundContext(1, 0), P, IDS)) == 50


def test_selection_is_seeded_per_round():
    def pick(r: int, s: int) -> list[str]:
        return [t.client_id for t in FedAvg(clients_per_round=5).configure_train(RoundContext(r, s), P, IDS)]

    assert pick(1, 0) == pick(1, 0)
    assert pick(1, 0) != pick(2, 0) and pick(1, 0) != pick(1, 1)
    seeds = {t.seed for t in FedAvg(clients_per_round=5).configure_train(RoundContext(1, 0), P, IDS)}
    assert len(seeds) == 5  # each client its own stream


def test_weighted_by_examples_and_failures_tolerated():
    results = [result("a", [1, 1, 1, 1], 1), result("b", [4, 4, 4, 4], 3)]
    failures = [Failure(1, "c", FailureKind.DROPPED, "unplugged")]
    new = FedAvg(min_clients=2).aggregate_train(RoundContext(1, 0), P, results, failures)
    np.testing.assert_allclose(new, [3.25] * 4)


def test_too_few_results_abort_the_round():
    with pytest.raises(RoundAbortedError, match="min_clients is 2"):
        FedAvg(min_clients=2).aggregate_train(RoundContext(1, 0), P, [result("a", P, 1)], [])
    with pytest.raises(RoundAbortedError, match="available"):
        FedAvg(min_clients=3).configure_train(RoundContext(1, 0), P, IDS[:2])


def test_server_lr_scales_the_step():
    new = FedAvg(server_optimizer=ServerSGD(0.5)).aggregate_train(
        RoundContext(1, 0), P + 1, [result("a", [2, 2, 2, 2], 5)], []
    )
    np.testing.assert_allclose(new, [2.0] * 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"fraction": 1.5}, "fraction"),
        ({"min_clients": 0}, "min_clients"),
    ],
)
def test_bad_hyperparameters_fail_in_the_constructor(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FedAvg(**kwargs)


def test_stragglers_get_fewer_epochs_and_can_be_dropped():
    strategy = FedAvg(
        clients_per_round=40, straggler_fraction=0.5, straggler_max_epochs=5, drop_stragglers=True
    )
    tasks = strategy.configure_train(RoundContext(3, 0), P, IDS)
    slow = [t for t in tasks if "local_epochs" in t.config]
    assert 10 < len(slow) < 30 and all(1 <= t.config["local_epochs"] <= 5 for t in slow)
    again = FedAvg(clients_per_round=40, straggler_fraction=0.5, straggler_max_epochs=5)
    assert [t.config for t in again.configure_train(RoundContext(3, 0), P, IDS)] == [t.config for t in tasks]
    slow_ids = {t.client_id for t in slow}
    results = [result(t.client_id, np.ones(4) if t.client_id in slow_ids else np.zeros(4), 1) for t in tasks]
    counted, dropped = strategy.screen(RoundContext(3, 0), results)  # before any server transform
    assert {f.client_id for f in dropped} == slow_ids and all(f.kind.value == "dropped" for f in dropped)
    kept = strategy.aggregate_train(RoundContext(3, 0), P, counted, dropped)
    np.testing.assert_array_equal(kept, np.zeros(4))  # only the non-stragglers' zero updates count
    assert again.screen(RoundContext(3, 0), results) == (results, [])
    assert not np.array_equal(again.aggregate_train(RoundContext(3, 0), P, results, []), np.zeros(4))
