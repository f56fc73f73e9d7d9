from __future__ import annotations

import numpy as np
import pytest

import shoal
from shoal import config as c
from shoal.data import synthetic
from shoal.errors import DataError
from shoal.experiment import load_data


def client_means(data) -> np.ndarray:
    return np.array([data[k].train.x.numpy().mean(0) for k in data])


def test_shapes_sizes_and_split():
    d = synthetic(0.5, 0.5, num_clients=30, seed=0)
    assert len(d) == 30 and d.input_shape == (60,) and d.num_classes == 10
    totals = [len(d[k].train) + len(d[k].test) for k in d]
    assert min(totals) >= 50  # int(lognormal(4, 2)) + 50
    assert all(abs(len(d[k].test) - 0.1 * t) <= 1 for k, t in zip(d, totals, strict=True))
    assert d.test is not None and len(d.test) == sum(len(d[k].test) for k in d)


def test_seeded():
    a, b = synthetic(1, 1, seed=4), synthetic(1, 1, seed=4)
    assert all(np.array_equal(a[k].train.x, b[k].train.x) for k in a)
    assert not np.array_equal(a["0"].train.x, synthetic(1, 1, seed=5)["0"].train.x)


def test_beta_spreads_inputs_and_iid_shares_everything():
    # v_k ~ N(B_k, 1) with B_k ~ N(0, beta): device input means spread more as beta grows
    spread = {beta: client_means(synthetic(0, beta, seed=1)).mean(1).std() for beta in (0.0, 2.0)}
    assert spread[2.0] > 2 * spread[0.0]
    iid = synthetic(0, 0, seed=1, iid=True)
    assert client_means(iid).mean(1).std() < 0.1  # every device draws around v = 0
    # one shared model and input law: every device's label mix is close to the pooled one
    assert label_skew(iid) < 0.3 < label_skew(synthetic(1, 1, seed=1))


def label_skew(d) -> float:
    """Mean total-variation distance between each device's label mix and the pooled mix."""
    hists = np.array([np.bincount(d[k].train.y.numpy(), minlength=10) for k in d], dtype=float)
    pooled = hists.sum(0) / hists.sum()
    return float(np.mean(0.5 * np.abs(hists / hists.sum(1, keepdims=True) - pooled).sum(1)))


def test_config_and_errors():
    cfg = c.from_dict(
        {"data": {"dataset": "synthetic", "num_clients": 12, "synthetic_alpha": 1, "synthetic_beta": 1}}
    )
    data = load_data(cfg)
    assert len(data) == 12 and data.name == "synthetic(1,1)"
    with pytest.raises(DataError, match="standard deviations"):
        synthetic(-1, 0)
    with pytest.raises(shoal.ConfigError, match="synthetic_alpha"):
        c.from_dict({"data": {"synthetic_alpha": -1}})
