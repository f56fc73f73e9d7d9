from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from shoal import config as c
from shoal.data.fraud import BANKS, CATEGORIES, FEATURES, PATTERNS, TEST_SHARE, fraud, transactions
from shoal.errors import DataError
from shoal.experiment import load_data


@pytest.fixture(scope="module")
def data():
    return fraud(8, seed=0, holdout_fraction=0.25)


def column(name: str) -> int:
    return FEATURES.index(name)


def test_shapes_names_and_sizes(data):
    assert list(data) == [b.name for b in BANKS]
    assert data.input_shape == (20,) == (len(FEATURES),) and data.num_classes == 2
    for bank in BANKS:
        held = data[bank.name]
        assert len(held.train) + len(held.test) == bank.transactions
        assert abs(len(held.test) - 0.25 * bank.transactions) <= 2
        assert held.train.x.dtype.is_floating_point and held.train.x.shape[1] == 20
    assert len(data.test) == sum(round(b.transactions * TEST_SHARE) for b in BANKS)


def test_seeded(data):
    again, other = fraud(8, seed=0, holdout_fraction=0.25), fraud(8, seed=1, holdout_fraction=0.25)
    for bank in data:
        assert np.array_equal(data[bank].train.x, again[bank].train.x)
        assert np.array_equal(data[bank].test.y, again[bank].test.y)
    assert not np.array_equal(data["megabank"].train.x, other["megabank"].train.x)


def test_every_bank_has_its_base_rate_in_train_and_holdout(data):
    for bank in BANKS:
        for part in (data[bank.name].train, data[bank.name].test):
            rate = float(part.y.float().mean())
            assert rate == pytest.approx(bank.fraud_rate, abs=1.5 / len(part)), bank.name
    rates = [b.fraud_rate for b in BANKS]
    assert min(rates) == 0.002 and max(rates) == 0.03  # 0.2% .. 3%, the spread banks report
    assert float(data.test.y.float().mean()) == pytest.approx(data.description["fraud_rate"], abs=1e-3)


def test_features_are_standardized_with_one_pooled_transform(data):
    pooled = np.concatenate([data[b].train.x.numpy() for b in data])
    assert np.allclose(pooled.mean(0), 0, atol=1e-4) and np.allclose(pooled.std(0), 1, atol=1e-3)
    # the same transform on the server's test set: near 0 and 1, not refitted to exactly that
    assert np.abs(data.test.x.numpy().mean(0)).max() < 0.1
    # the banks' customers differ: their feature means do, after the shared transform
    means = np.array([data[b].train.x.numpy().mean(0) for b in data])
    assert np.ptp(means[:, column("cardholder_age")]) > 1.0
    assert np.ptp(means[:, column("foreign")]) > 0.5  # the travel card's customers go abroad


def test_fraud_patterns_differ_by_bank():
    rng = np.random.default_rng(0)
    by_bank = {b.name: transactions(b, 20_000, rng) for b in BANKS}

    def fraud_share(bank: str, feature: str) -> float:
        x, y = by_bank[bank]
        return float((x[y == 1, column(feature)] > 0.5).mean())

    atm = {b: fraud_share(b, f"category_{CATEGORIES[5]}") for b in by_bank}
    new_device = {b: fraud_share(b, "new_device") for b in by_bank}
    assert max(atm, key=atm.__getitem__) == "regional" and atm["fintech"] < 0.05
    assert max(new_device, key=new_device.__getitem__) == "creditunion"
    small = {b: float(np.median(x[y == 1, column("log_amount")])) for b, (x, y) in by_bank.items()}
    assert min(small, key=small.__getitem__) == "fintech"  # card testing: a few dollars at a time
    # and a fraud pattern differs from the same bank's ordinary transactions
    x, y = by_bank["regional"]
    assert (x[y == 1, column("hour_cos")] > 0.7).mean() > 5 * (x[y == 0, column("hour_cos")] > 0.7).mean()
    assert len(PATTERNS) == 4 and all(len(b.patterns) == 4 for b in BANKS)


def test_learnable_but_not_trivially(data):
    x = np.concatenate([data[b].train.x.numpy() for b in data])
    y = np.concatenate([data[b].train.y.numpy() for b in data])
    model = LogisticRegression(max_iter=300).fit(x, y)
    pr_auc = average_precision_score(data.test.y.numpy(), model.predict_proba(data.test.x.numpy())[:, 1])
    assert 0.3 < pr_auc < 0.95


def test_more_banks_repeat_the_table_and_bad_arguments_fail():
    d = fraud(10, seed=0, holdout_fraction=0.0)
    assert list(d)[8:] == ["megabank-2", "neobank-2"]
    assert d["megabank"].test is None  # no holdout asked for
    assert not np.array_equal(d["megabank"].train.x[:50], d["megabank-2"].train.x[:50])
    with pytest.raises(DataError, match="num_clients"):
        fraud(0)
    with pytest.raises(DataError, match="holdout_fraction"):
        fraud(4, holdout_fraction=1.0)


def test_loads_from_a_config():
    cfg = c.from_dict({"seed": 3, "data": {"dataset": "fraud", "num_clients": 3, "holdout_fraction": 0.2}})
    d = load_data(cfg)
    assert list(d) == ["megabank", "neobank", "regional"] and d.name == "fraud"
    assert np.array_equal(d["neobank"].train.y, fraud(3, seed=3, holdout_fraction=0.2)["neobank"].train.y)
