from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.data import (
    dirichlet,
    dirichlet_indices,
    iid_indices,
    partition,
    quantity_skew_indices,
    shard_indices,
)
from shoal.errors import DataError

LABELS = np.repeat(np.arange(10), 60)  # 600 samples, 10 classes


def covers_exactly(parts, n):
    joined = np.concatenate(parts)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 500), k=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_iid_deals_every_sample_once(n, k, seed):
    if k > n:
        with pytest.raises(DataError):
            iid_indices(n, k, np.random.default_rng(seed))
        return
    parts = iid_indices(n, k, np.random.default_rng(seed))
    assert covers_exactly(parts, n)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(0.05, 100), k=st.integers(2, 30), seed=st.integers(0, 1000))
def test_dirichlet_covers_and_respects_min_size(alpha, k, seed):
    parts = dirichlet_indices(LABELS, k, alpha, np.random.default_rng(seed), min_size=2)
    assert covers_exactly(parts, len(LABELS)) and min(map(len, parts)) >= 2


def test_dirichlet_alpha_controls_skew():
    def mean_classes(alpha):
        parts = dirichlet_indices(LABELS, 20, alpha, np.random.default_rng(0))
        return np.mean([len(np.unique(LABELS[p])) for p in parts])

    assert mean_classes(0.1) < 5 < 9 < mean_classes(100.0)


def test_shards_give_each_client_few_labels():
    parts = shard_indices(LABELS, 30, 2, np.random.default_rng(0))
    assert covers_exactly(parts, len(LABELS))
    assert all(len(p) == 20 for p in parts)
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2  # 60-sample classes, 10-sample shards


def test_quantity_skew_sizes_vary_and_sum():
    parts = quantity_skew_indices(600, 20, 1.5, np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert covers_exactly(parts, 600) and min(sizes) >= 2 and max(sizes) > 3 * np.median(sizes)


def test_partitions_are_seeded(digits_data):
    a = partition(digits_data, "dirichlet", 10, seed=3, dirichlet_alpha=0.3)
    b = dirichlet(digits_data, 10, alpha=0.3, seed=3)
    assert all(np.array_equal(a[c].train.y, b[c].train.y) for c in a)
    c = dirichlet(digits_data, 10, alpha=0.3, seed=4)
    assert not all(np.array_equal(a[i].train.y, c[i].train.y) for i in a)


def test_holdout_and_errors(digits_data):
    fed = partition(digits_data, "iid", 10, holdout_fraction=0.25)
    first = fed["0"]
    assert (
        first.test is not None and abs(len(first.test) / (len(first.train) + len(first.test)) - 0.25) < 0.02
    )
    assert fed.test is digits_data.test and fed.client_ids == [str(i) for i in range(10)]
    with pytest.raises(DataError, match="num_clients"):
        partition(digits_data, "iid", 0)
    with pytest.raises(DataError, match="dirichlet_alpha"):
        partition(digits_data, "dirichlet", 10, dirichlet_alpha=0)
    with pytest.raises(ValueError, match="not a valid Partition"):
        partition(digits_data, "random", 10)
