"""Robust aggregators and pre-aggregators on inputs computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import RoundAbortedError
from shoal.strategy.preagg import Bucketing, Clip, NearestNeighborMixing, RobustPipeline
from shoal.strategy.robust import (
    AGGREGATORS,
    Bulyan,
    CenteredClipping,
    GeometricMedian,
    Krum,
    Median,
    MinimumDiameterAveraging,
    MultiKrum,
    TrimmedMean,
)


def agg(rule, rows):
    updates = [np.asarray(r, np.float32) for r in rows]
    return rule(updates, np.ones(len(updates)))


def test_median_of_odd_and_even_counts():
    assert np.array_equal(agg(Median(), [[1, 5], [3, 1], [2, 9]]), [2, 5])
    assert np.array_equal(
        agg(Median(), [[1, 5], [3, 1], [2, 9], [10, 0]]), [2.5, 3]
    )  # mean of the middle two


def test_trimmed_mean_drops_f_from_each_end_and_is_the_mean_when_nothing_is_trimmed():
    rows = [[1, -100], [2, 0], [3, 1], [100, 2], [4, 3]]
    assert np.allclose(agg(TrimmedMean(f=1), rows), [3, 1])  # (2+3+4)/3 and (0+1+2)/3
    assert np.allclose(agg(TrimmedMean(f=0), rows), np.mean(rows, axis=0))


def test_geometric_median_of_collinear_points_is_the_middle_one():
    direction = np.array([3.0, 4.0]) / 5
    rows = [t * direction for t in (0.0, 1.0, 2.0, 10.0, 11.0)]
    assert np.allclose(agg(GeometricMedian(f=2), rows), 2 * direction, atol=1e-4)


def test_krum_picks_the_update_closest_to_its_neighbours():
    rows = [[0, 0], [1, 0], [0, 1], [1, 1], [50, 50]]
    # f = 1: each score sums the n - f - 2 = 2 smallest squared distances
    # [0,0]: 1 + 1 = 2; [1,0]: 1 + 1; [0,1]: 1 + 1; [1,1]: 1 + 1; [50,50]: 2 * 4901
    assert list(Krum(f=1).chosen(np.asarray(rows, float))[:1]) == [0]  # ties go to the lowest index
    assert np.array_equal(agg(Krum(f=1), rows), [0, 0])
    assert np.allclose(agg(MultiKrum(f=1), rows), [0.5, 0.5])  # the n - f = 4 best


def test_bulyan_keeps_out_an_outlier():
    rows = [[0.0], [0.1], [-0.1], [0.2], [-0.2], [0.05], [1000.0]]  # n = 7 = 4f + 3 for f = 1
    out = agg(Bulyan(f=1), rows)
    assert abs(out[0]) < 0.2


def test_centered_clipping_is_the_mean_when_every_update_is_within_tau():
    rows = [[0.1, 0.2], [0.3, -0.1], [0.0, 0.0]]
    assert np.allclose(agg(CenteredClipping(f=1, tau=10.0), rows), np.mean(rows, axis=0), atol=1e-7)
    far = [*rows, [1e6, 1e6]]  # clipped to tau around the median: moves the result by at most tau / n
    out = agg(CenteredClipping(f=1, tau=0.5, iterations=1), far)
    assert np.linalg.norm(out - np.median(np.asarray(far), axis=0)) <= 0.5 + 1e-6


def test_mda_averages_the_tightest_n_minus_f():
    rows = [[0, 0], [2, 0], [0, 2], [40, 40]]
    assert np.allclose(agg(MinimumDiameterAveraging(f=1), rows), [2 / 3, 2 / 3])


@pytest.mark.parametrize(
    ("rule", "n", "formula"),
    [
        (Median(f=2), 4, r"n > 2f clients, i.e. n >= 5; this round has 4"),
        (Krum(f=2), 6, r"n > 2f \+ 2 clients, i.e. n >= 7"),
        (Bulyan(f=1), 6, r"n >= 4f \+ 3 clients, i.e. n >= 7"),
    ],
)
def test_too_few_clients_for_f_is_refused_with_the_formula(rule, n, formula):
    with pytest.raises(RoundAbortedError, match=formula):
        agg(rule, np.zeros((n, 3)))


def test_mda_refuses_a_search_too_large():
    with pytest.raises(RoundAbortedError, match="C\\(60, 20\\)"):
        agg(MinimumDiameterAveraging(f=20), np.zeros((60, 2)))


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(sorted(AGGREGATORS)),
    st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=6),
)
def test_identical_updates_aggregate_to_themselves(name, row):
    rule = AGGREGATORS[name](f=1)
    out = agg(rule, [row] * rule.needs())
    assert np.allclose(out, row, atol=1e-5)


def test_clip_bounds_every_norm_and_leaves_small_updates_alone():
    x = np.array([[3.0, 4.0], [0.3, 0.4]])
    out = Clip(threshold=1.0)(x)
    assert np.allclose(out, [[0.6, 0.8], [0.3, 0.4]])


def test_nearest_neighbour_mixing_averages_each_with_its_n_minus_f_nearest():
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    out = NearestNeighborMixing(f=1)(x)  # 3 nearest, itself included
    assert np.allclose(out[:, 0], [1.0, 1.0, 1.0, (10 + 2 + 1) / 3])


def test_bucketing_averages_buckets_of_a_seeded_shuffle():
    x = np.arange(10, dtype=float)[:, None]
    out = Bucketing(bucket_size=3)(x)
    assert out.shape == (4, 1) and np.isclose(out[:3].sum() * 3 + out[3, 0], 45)  # 3 full buckets and 1
    assert np.array_equal(out, Bucketing(bucket_size=3)(x))  # the same updates, the same buckets


def test_a_pipeline_runs_pre_aggregation_then_the_rule():
    rows = [[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [300.0, 400.0], [0.1, 0.1]]
    plain_mean = np.mean(rows, axis=0)
    out = agg(RobustPipeline(Median(f=1), (Clip(1.0), NearestNeighborMixing(f=1))), rows)
    assert np.linalg.norm(out) < 0.2 < np.linalg.norm(plain_mean)


def test_the_config_builds_a_robust_pipeline_and_refuses_what_it_cannot_vouch_for():
    from shoal import config
    from shoal.errors import ConfigError

    cfg = config.from_dict(
        {
            "strategy": {
                "aggregator": "krum",
                "attackers": 2,
                "pre_aggregation": ["clip", "nnm"],
                "clients_per_round": 7,
            }
        }
    )
    pipeline = cfg.strategy.robust_aggregator()
    assert isinstance(pipeline.aggregator, Krum) and pipeline.aggregator.f == 2
    assert [p.name for p in pipeline.pre] == ["clip", "nnm"] and pipeline.pre[1].f == 2
    assert cfg.strategy.build().aggregator is not None
    with pytest.raises(ConfigError, match=r"n > 2f \+ 2 clients, i.e. n >= 7; this round has 6"):
        config.from_dict({"strategy": {"aggregator": "krum", "attackers": 2, "clients_per_round": 6}})
    with pytest.raises(ConfigError, match="in buckets of 2"):
        config.from_dict(
            {
                "strategy": {
                    "aggregator": "median",
                    "attackers": 2,
                    "pre_aggregation": ["bucketing"],
                    "clients_per_round": 8,
                }
            }
        )
    with pytest.raises(ConfigError, match="the mean tolerates none"):
        config.from_dict({"strategy": {"attackers": 1}})
    with pytest.raises(ConfigError, match="show the server only the sum"):
        config.from_dict({"strategy": {"aggregator": "median"}, "secagg": {"mode": "secagg"}})
    with pytest.raises(ConfigError, match="merges the cohort into one noised average"):
        config.from_dict({"strategy": {"aggregator": "median"}, "privacy": {"mode": "central"}})


@pytest.mark.parametrize("aggregator", ["median", "trimmed-mean", "krum", "geometric-median"])
def test_a_robust_run_trains(aggregator, tmp_path):
    from shoal import config, experiment

    raw = {
        "rounds": 4, "seed": 0, "backend": "inprocess",
        "data": {"dataset": "digits", "num_clients": 10}, "model": {"name": "mlp", "hidden": [32]},
        "strategy": {"clients_per_round": 7, "aggregator": aggregator, "attackers": 1},
        "trainer": {"lr": 0.3, "local_epochs": 2, "batch_size": 16},
    }  # fmt: skip
    assert experiment.run(config.from_dict(raw), tmp_path).final_accuracy > 0.7
