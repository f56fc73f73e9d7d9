"""The hospitals split: sites as unequal as the table says, disjoint, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.data.hospitals import SITES, TEST_FRACTION, hospitals
from shoal.errors import DataError


def _rows(d):
    return {k: np.concatenate([c.train.x.numpy(), c.test.x.numpy()]) for k, c in d.clients.items()}


def test_sites_follow_the_table_in_size_and_case_mix() -> None:
    d = hospitals(seed=0, holdout_fraction=0.3)
    assert list(d.clients) == [s.name for s in SITES] and d.num_classes == 2 and d.input_shape == (30,)
    pool = 569 - round(569 * 0.372 * TEST_FRACTION) - round(569 * 0.628 * TEST_FRACTION)
    for site in SITES[1:]:
        c = d[site.name]
        y = np.concatenate([c.train.y.numpy(), c.test.y.numpy()])
        assert len(y) == round(site.patients * pool)
        assert y.mean() == pytest.approx(site.malignant, abs=0.02)
        assert c.test is not None and len(c.test) == pytest.approx(0.3 * len(y), abs=2)
    malignant = {
        s: float(np.concatenate([c.train.y.numpy(), c.test.y.numpy()]).mean()) for s, c in d.clients.items()
    }
    assert malignant["university"] > 0.5 > 0.15 > malignant["screening"]  # referral vs screening
    assert (
        sum(len(c.train) + len(c.test) for c in d.clients.values()) + len(d.test) == 569
    )  # every patient once


def test_no_patient_is_at_two_sites_or_in_the_server_test_set() -> None:
    d = hospitals(seed=1)
    rows = [tuple(np.round(r, 5)) for x in _rows(d).values() for r in x]
    assert len(rows) == len(set(rows))
    test = {tuple(np.round(r, 5)) for r in d.test.x.numpy()}
    assert not test & set(rows)


def test_the_split_is_made_from_the_seed() -> None:
    a, b, c = hospitals(seed=3), hospitals(seed=3), hospitals(seed=4)
    assert all(np.array_equal(a[k].train.x.numpy(), b[k].train.x.numpy()) for k in a.clients)
    assert not np.array_equal(a["rural"].train.x.numpy(), c["rural"].train.x.numpy())


def test_fewer_sites_and_bad_values_are_named() -> None:
    assert list(hospitals(3)) == ["university", "regional", "community"]
    with pytest.raises(DataError, match="5 sites"):
        hospitals(6)
    with pytest.raises(DataError, match="holdout_fraction"):
        hospitals(5, holdout_fraction=1.0)
