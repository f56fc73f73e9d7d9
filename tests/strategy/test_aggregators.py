from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shoal.strategy import mean, weighted_mean

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    update=hnp.arrays(np.float32, st.integers(1, 64), elements=finite),
    weights=st.lists(st.integers(1, 10_000), min_size=1, max_size=20),
)
def test_identical_updates_aggregate_to_themselves(update, weights):
    stacked = np.stack([update] * len(weights))
    w = np.array(weights, dtype=np.float64)
    assert np.array_equal(weighted_mean(stacked, w), update)
    assert np.array_equal(mean(stacked, w), update)


@settings(max_examples=100, deadline=None)
@given(
    updates=hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 32)), elements=finite),
    data=st.data(),
)
def test_weighted_mean_matches_the_formula(updates, data):
    w = np.array(data.draw(st.lists(st.floats(0.1, 100), min_size=len(updates), max_size=len(updates))))
    expected = (w[:, None] * updates.astype(np.float64)).sum(0) / w.sum()
    got = weighted_mean(updates, w)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_inputs_are_untouched_and_bad_weights_refused():
    u = np.ones((2, 3), np.float32)
    w = np.array([1.0, 3.0])
    weighted_mean(u, w)
    assert np.array_equal(u, np.ones((2, 3))) and np.array_equal(w, [1.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_mean(u, np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="sum to zero"):
        weighted_mean(u, np.zeros(2))
    with pytest.raises(ValueError, match="zero updates"):
        weighted_mean([], np.zeros(0))
    with pytest.raises(ValueError, match="one length"):
        weighted_mean([np.ones(2, np.float32), np.ones(3, np.float32)], np.ones(2))
