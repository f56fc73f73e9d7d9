from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.data import digits, iid, shakespeare
from shoal.data.drift import (
    DriftingDataset,
    Joining,
    LabelShift,
    NewClasses,
    drifting,
    schedule_for,
    view_at,
)
from shoal.errors import DataError


@pytest.fixture(scope="module")
def base():
    return iid(digits(), 12, seed=0, holdout_fraction=0.2)


@pytest.fixture(scope="module")
def roles():
    return shakespeare(num_clients=8)


def _snapshot(data, rounds):
    """Every client's (train x, train y, test y) at each round, as numpy."""
    out = {}
    for r in rounds:
        data.at_round(r)
        for cid in data.client_ids:
            c = data[cid]
            out[r, cid] = (c.train.x.numpy(), c.train.y.numpy(), None if c.test is None else c.test.y.numpy())
    return out


def _same(a, b):
    if a.keys() != b.keys():
        return False
    for k in a:
        for u, v in zip(a[k], b[k], strict=True):
            if (u is None) != (v is None) or (u is not None and not np.array_equal(u, v)):
                return False
    return True


@pytest.mark.parametrize(
    ("kind", "rounds"), [("new-classes", (3,)), ("label-shift", (2, 4)), ("joining", (3,))]
)
def test_a_schedule_is_reproducible_from_the_seed_and_differs_for_another(base, kind, rounds):
    views = [
        _snapshot(drifting(base, schedule_for(kind, base, rounds, seed)), range(1, 6)) for seed in (7, 7, 8)
    ]
    assert _same(views[0], views[1])
    assert not _same(views[0], views[2])


def test_views_do_not_depend_on_the_order_rounds_are_asked_in(base):
    schedule = schedule_for("label-shift", base, (2, 5), seed=3)
    forward = _snapshot(drifting(base, schedule), [1, 2, 3, 4, 5])
    backward = _snapshot(drifting(base, schedule), [5, 4, 3, 2, 1])
    assert _same(forward, backward)
    pure = view_at(base, schedule, 3)
    live = drifting(base, schedule, round=3)
    for cid in live.client_ids:
        assert torch.equal(pure[cid].train.x, live[cid].train.x)


def test_new_classes_are_unlocked_at_their_round(base):
    schedule = NewClasses.shuffled(10, (4, 7), seed=0)
    assert sorted(c for g in schedule.groups for c in g) == list(range(10))
    assert [len(g) for g in schedule.groups] == [4, 3, 3]
    data = drifting(base, schedule)
    for r, stage in [(1, 0), (3, 0), (4, 1), (6, 1), (7, 2), (20, 2)]:
        data.at_round(r)
        assert data.round == r
        labels = np.concatenate([data[c].train.y.numpy() for c in data.client_ids])
        held = np.concatenate([data[c].test.y.numpy() for c in data.client_ids])
        assert set(labels) == set(schedule.groups[stage])  # its own classes only, and all of them
        assert set(held) <= set(schedule.groups[stage])


def test_new_classes_can_keep_the_old_ones(base):
    schedule = NewClasses(((0, 1), (2, 3)), (3,), keep_old=True)
    data = drifting(base, schedule, round=3)
    labels = np.concatenate([data[c].train.y.numpy() for c in data.client_ids])
    assert set(labels) == {0, 1, 2, 3}
    sets = data.test_sets()
    assert set(sets["old"].y.numpy()) == {0, 1}
    assert set(sets["new"].y.numpy()) == {2, 3}
    assert len(sets["old"]) + len(sets["new"]) == int(np.isin(base.test.y.numpy(), [0, 1, 2, 3]).sum())


def test_a_client_without_a_stages_classes_is_absent_then(base):
    # client "0" keeps only its 0s and 1s; everyone else has all classes
    keep = np.flatnonzero(np.isin(base["0"].train.y.numpy(), [0, 1]))
    clients = {c: base[c] for c in base.client_ids}
    clients["0"] = type(base["0"])(base["0"].train.subset(keep), None)
    narrow = type(base)(base.name, clients, 10, base.input_shape, base.test)
    data = drifting(narrow, NewClasses(((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)), (3,)))
    assert "0" in data.client_ids
    data.at_round(3)
    assert "0" not in data.client_ids and "0" not in data.clients
    assert len(data.client_ids) == 11
    assert data.sizes()["0"] == len(keep)  # the pools: what limits a claim in every round


def test_label_mix_moves_from_the_first_draw_to_the_second(base):
    schedule = LabelShift(10, (3, 9), seed=1, alpha=0.3, share=1.0)
    assert schedule.progress(1) == 0 and schedule.progress(6) == 0.5 and schedule.progress(12) == 1
    first, second = schedule.mixes("4")
    np.testing.assert_allclose(schedule.mix("4", 6), (first + second) / 2)
    data = drifting(base, schedule)

    def gap(r, which):  # L1 distance of the pooled data's label mix from the population mix
        data.at_round(r)
        y = np.concatenate([data[c].train.y.numpy() for c in data.client_ids])
        seen = np.bincount(y, minlength=10) / len(y)
        return np.abs(seen - schedule.population_mix(base, which)).sum()

    assert gap(1, 0) < gap(1, 1) / 3  # before the move: the first draws' mix
    assert gap(12, 1) < gap(12, 0) / 3  # after it: the second draws'
    data.at_round(6)  # half way, each client's data follows its own interpolated mix
    for cid in data.client_ids:
        seen = np.bincount(data[cid].train.y.numpy(), minlength=10) / len(data[cid].train)
        here, start = np.abs(seen - schedule.mix(cid, 6)).sum(), np.abs(seen - first).sum()
        assert here < 0.5 and (cid != "4" or here < start)
    sets = schedule.test_sets(base)
    for name, which in (("old", 0), ("new", 1)):
        mix = np.bincount(sets[name].y.numpy(), minlength=10) / len(sets[name])
        assert np.abs(mix - schedule.population_mix(base, which)).sum() < 0.05


def test_label_shift_draws_share_of_the_pool(base):
    data = drifting(base, LabelShift(10, (2,), seed=0, share=0.5))
    for cid in data.client_ids:
        assert len(data[cid].train) <= round(0.5 * len(base[cid].train)) <= 2 * len(data[cid].train)


def test_roles_join_at_their_round(roles):
    schedule = Joining.shuffled(list(roles.client_ids), (3, 5), seed=0)
    data = drifting(roles, schedule)
    cohorts = [sorted(c for c, s in schedule.stages.items() if s == k) for k in range(3)]
    everyone = [*cohorts[0], *cohorts[1], *cohorts[2]]
    assert sorted(len(c) for c in cohorts) == [2, 3, 3]
    for r, present in [(1, cohorts[0]), (2, cohorts[0]), (3, cohorts[0] + cohorts[1]), (5, everyone)]:
        data.at_round(r)
        assert sorted(data.client_ids) == sorted(present)
        for cid in present:
            assert data[cid] is roles[cid]  # a role that joined holds all its text
    sets = data.test_sets()
    assert len(sets["old"]) == sum(len(roles[c].test) for c in cohorts[0])
    assert len(sets["new"]) == sum(len(roles[c].test) for c in cohorts[1] + cohorts[2])


def test_schedules_refuse_what_they_cannot_do(base):
    with pytest.raises(DataError, match="increasing"):
        NewClasses(((0,), (1,)), (1,))
    with pytest.raises(DataError, match="cannot fill"):
        NewClasses.shuffled(2, (2, 3), seed=0)
    with pytest.raises(DataError, match="two rounds"):
        LabelShift(10, (2, 3, 4), seed=0)
    with pytest.raises(DataError, match="holdout"):
        no_holdouts = iid(digits(), 4, seed=0)
        Joining.shuffled(list(no_holdouts.client_ids), (2,), seed=0).test_sets(no_holdouts)
    with pytest.raises(DataError, match="DriftingClients"):
        DriftingDataset(base.name, dict(base.clients), 10, base.input_shape)
