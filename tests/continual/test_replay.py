from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy import stats

from shoal.client import TorchTrainer
from shoal.client.state import ClientStateStore
from shoal.continual import ContinualConfig, replay
from shoal.continual.replay import (
    REPLAY_KEYS,
    REPLAY_SEEN,
    REPLAY_X,
    REPLAY_Y,
    buffer,
    fingerprints,
    offer,
    reservoir_slots,
)
from shoal.data import ArrayDataset, ClientData, digits, iid
from shoal.messages import TrainTask
from shoal.models import mlp
from shoal.runtime import initial_params
from shoal.runtime.backend import InProcessBackend


def _items(lo: int, hi: int) -> ArrayDataset:
    """Examples whose single feature is their id, so a reservoir's content can be read back."""
    ids = np.arange(lo, hi)
    return ArrayDataset.from_numpy(ids[:, None].astype(np.float32), ids % 3)


def _held(state) -> np.ndarray:
    return state[REPLAY_X][:, 0].astype(int)


def test_algorithm_r_keeps_a_uniform_sample_of_the_stream():
    # 60 items arrive in uneven rounds; over 3000 seeded runs each must be kept 10/60 of the time
    capacity, chunks, trials = 10, (7, 3, 20, 1, 29), 3000
    kept = np.zeros(sum(chunks), int)
    for trial in range(trials):
        state: dict[str, np.ndarray] = {}
        start = 0
        for round_, size in enumerate(chunks):
            offer(state, _items(start, start + size), capacity, np.random.default_rng([trial, round_]))
            start += size
            assert len(state[REPLAY_Y]) == min(capacity, start)  # bounded, and full once it can be
        kept[_held(state)] += 1
        assert len(set(_held(state))) == capacity  # no example twice
    expected = trials * capacity / len(kept)
    assert stats.chisquare(kept, np.full(len(kept), expected)).pvalue > 1e-3
    # the first and last items are no more (or less) likely than the middle ones
    assert abs(kept[:10].mean() - expected) < 0.1 * expected
    assert abs(kept[-10:].mean() - expected) < 0.1 * expected


def test_examples_seen_again_are_not_offered_again():
    # a stage's 30 examples are seen in three rounds, the next stage's 30 in one: the reservoir
    # must still hold each stage half the time, not favour the stage it saw three times
    trials, first_stage = 2000, 0
    for trial in range(trials):
        state: dict[str, np.ndarray] = {}
        for round_ in range(3):
            offer(state, _items(0, 30), 10, np.random.default_rng([trial, round_]))
        assert int(state[REPLAY_SEEN][0]) == 30 and len(state[REPLAY_KEYS]) == 30
        new = offer(state, _items(30, 60), 10, np.random.default_rng([trial, 9]))
        assert new == 30
        first_stage += int((_held(state) < 30).sum())
    share = first_stage / (trials * 10)
    assert abs(share - 0.5) < 0.02  # binomial sd 0.005


def test_reservoir_slots_follow_algorithm_r():
    rng = np.random.default_rng(0)
    assert reservoir_slots(0, 4, 10, rng).tolist() == [0, 1, 2, 3]  # room: every item is kept, in order
    slots = reservoir_slots(10, 10_000, 10, rng)
    assert slots.min() >= -1 and slots.max() < 10
    t = 10 + np.arange(10_000)
    # item t is kept with probability capacity / (t + 1): the expected count is sum 10/(t+1)
    assert abs((slots >= 0).sum() - (10 / (t + 1)).sum()) < 4 * np.sqrt((10 / (t + 1)).sum())


def test_fingerprints_tell_examples_apart_by_features_and_label():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.5]])
    keys = fingerprints(ArrayDataset(x, torch.tensor([0, 1, 0])))
    assert len(set(keys.tolist())) == 3
    assert fingerprints(ArrayDataset(x[:1], torch.tensor([0])))[0] == keys[0]


@pytest.fixture(scope="module")
def clients():
    return iid(digits(), 6, seed=0)


@pytest.fixture(scope="module")
def model(clients):
    return functools.partial(mlp, clients.input_shape, 10, (16,))


def test_replay_trains_on_the_buffer_and_keeps_it_through_the_state_store(clients, model):
    params, _ = initial_params(model, 0)
    backend = InProcessBackend(
        TorchTrainer(lr=0.1, continual=ContinualConfig(replay_size=25)), model, clients
    )
    first = backend.train([TrainTask(1, "0", params, seed=11)])[0]
    assert first.metrics["replay_buffer"] == 25 and first.metrics["replay_new"] == len(clients["0"].train)
    backend.commit(["0"])
    kept = backend.client_states.get("0")
    assert set(kept) == {REPLAY_X, REPLAY_Y, REPLAY_SEEN, REPLAY_KEYS}  # nothing transient stays
    assert kept[REPLAY_X].shape == (25, *clients.input_shape)
    # the round's data is the client's own plus the 25 remembered, and nothing new is offered
    again = backend.train([TrainTask(2, "0", params, seed=12)])[0]
    assert again.metrics["replay_new"] == 0 and again.num_examples == len(clients["0"].train)
    # a result the server did not count leaves the committed reservoir as it was
    backend.commit([])
    after = backend.client_states.get("0")
    assert all(np.array_equal(after[k], kept[k]) for k in kept)
    # and it survives a checkpoint
    restored = ClientStateStore()
    restored.load_state_dict(backend.client_states.state_dict())
    assert np.array_equal(restored.get("0")[REPLAY_X], kept[REPLAY_X])


@pytest.mark.parametrize(("share", "replayed"), [(0.5, 4), (0.75, 12)])
def test_replay_mixes_its_share_of_past_examples_into_the_data(share, replayed):
    state: dict[str, np.ndarray] = {}
    algorithm = replay.ExperienceReplay()
    run = type(
        "Run", (), {"trainer": TorchTrainer(continual=ContinualConfig(replay_size=5, replay_share=share))}
    )()
    stage0 = ClientData(_items(0, 8))
    out = algorithm.local_data(
        TrainTask(1, "a", np.zeros(1, np.float32), 1), stage0, run, lambda: 3, state, None
    )
    assert out is stage0  # nothing remembered yet
    remembered = sorted(_held(state).tolist())
    stage1 = ClientData(_items(100, 104))
    out = algorithm.local_data(
        TrainTask(2, "a", np.zeros(1, np.float32), 2), stage1, run, lambda: 3, state, None
    )
    ids = out.train.x[:, 0].int().tolist()
    assert ids[:4] == [100, 101, 102, 103] and len(ids) == 4 + replayed
    # only what the reservoir held before this round, each as evenly as the count allows
    counts = np.bincount(ids[4:], minlength=8)[remembered]
    assert set(ids[4:]) <= set(remembered) and counts.max() - counts.min() <= 1
    assert out.train.y[4:].tolist() == [i % 3 for i in ids[4:]]  # labels travel with their examples
    assert len(buffer(state)) == 5
