"""Experience replay on the device: a bounded, uniform sample of everything it has trained on.

When a client's data drifts (new classes, a new label mix), training on the new data
alone overwrites what the model knew; mixing a few remembered examples back in is the
simplest defence that works in class-incremental learning (Rolnick et al. 2019, "Experience
Replay for Continual Learning"; Chaudhry et al. 2019 on tiny episodic memories). The
device keeps at most ``replay_size`` examples in its client state, a uniform random sample of
the distinct examples it has seen (Vitter 1985, Algorithm R, with the task's seed), and
trains on its current data plus that sample.

Why distinct examples: a client sees the same examples in every round of a stage. Offered
again each time, they would crowd the reservoir with copies, and the stages a client was
picked more often in would dominate it. So each example (a BLAKE2b fingerprint of its
features and label) is offered once; the fingerprints of everything offered stay in the
state (8 bytes an example).

Remembered examples make up ``replay_share`` of what the device trains on (half by
default, as in ER's one memory example per new one), the reservoir cycled in a seeded
order. The number of local steps is still set by the current data (``LocalRun.steps``):
replay spends the same compute, part of it on remembered examples. The state's arrays:
``replay_x`` ``[m, *input_shape]``, ``replay_y`` ``[m]``, ``replay_seen`` (distinct
examples offered so far, ``[1]``) and ``replay_keys`` (their sorted fingerprints),
with ``m = min(replay_seen, replay_size)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from shoal.client.algorithm import ClientAlgorithm, ClientOutput, LocalRun, register
from shoal.client.state import ClientState
from shoal.continual.config import settings
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.messages import TrainTask

REPLAY_X, REPLAY_Y, REPLAY_SEEN, REPLAY_KEYS = "replay_x", "replay_y", "replay_seen", "replay_keys"
_STREAM = 0x5E9A7  # the reservoir's draws, apart from everything else seeded by task.seed


def reservoir_slots(seen: int, arriving: int, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """Algorithm R for ``arriving`` items after ``seen``: the slot each one goes to, or -1.

    Item ``t`` (0-based over the whole stream) fills slot ``t`` while the reservoir has
    room, and afterwards replaces slot ``j ~ U{0..t}`` when ``j < capacity``: each of the
    ``t + 1`` items so far is then in the reservoir with probability ``capacity / (t + 1)``.
    Later items overwrite earlier ones that drew the same slot, in order."""
    t = seen + np.arange(arriving, dtype=np.int64)
    j = rng.integers(0, t + 1) if arriving else np.zeros(0, np.int64)
    return np.where(t < capacity, t, np.where(j < capacity, j, -1))


def fingerprints(data: ArrayDataset) -> np.ndarray:
    """One 64-bit BLAKE2b fingerprint per example, of its features and label."""
    x = np.ascontiguousarray(data.x.numpy()).reshape(len(data), -1)
    y = data.y.numpy()
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(row.tobytes() + int(label).to_bytes(8, "little"), digest_size=8).digest(),
                "little",
            )
            for row, label in zip(x, y, strict=True)
        ),
        dtype=np.uint64,
        count=len(data),
    )


def buffer(state: ClientState) -> ArrayDataset | None:
    """The examples in the reservoir (None: empty)."""
    if REPLAY_Y not in state or not len(state[REPLAY_Y]):
        return None
    return ArrayDataset(torch.from_numpy(state[REPLAY_X].copy()), torch.from_numpy(state[REPLAY_Y].copy()))


def offer(state: ClientState, data: ArrayDataset, capacity: int, rng: np.random.Generator) -> int:
    """Offer ``data``'s examples not offered before to the reservoir in ``state`` (changed in
    place); returns how many were new."""
    keys = fingerprints(data)
    known = state.get(REPLAY_KEYS, np.zeros(0, np.uint64))
    _, first = np.unique(keys, return_index=True)  # a duplicate within this data is one example
    fresh = np.sort(first[~np.isin(keys[first], known)])
    seen = int(state[REPLAY_SEEN][0]) if REPLAY_SEEN in state else 0
    slots = reservoir_slots(seen, len(fresh), capacity, rng)
    size = min(capacity, seen + len(fresh))
    x_np, y_np = data.x.numpy(), data.y.numpy()
    xs = np.zeros((size, *x_np.shape[1:]), x_np.dtype)
    ys = np.zeros(size, np.int64)
    if REPLAY_Y in state:  # while the reservoir has room it holds every example so far, in order
        kept = len(state[REPLAY_Y])
        xs[:kept], ys[:kept] = state[REPLAY_X], state[REPLAY_Y]
    for row, slot in zip(fresh, slots, strict=True):
        if slot >= 0:
            xs[slot], ys[slot] = x_np[row], y_np[row]
    state[REPLAY_X], state[REPLAY_Y] = xs, ys
    state[REPLAY_SEEN] = np.array([seen + len(fresh)], np.int64)
    state[REPLAY_KEYS] = np.union1d(known, keys[fresh]).astype(np.uint64)
    return len(fresh)


def with_replay(
    data: ClientData, past: ArrayDataset | None, share: float, rng: np.random.Generator
) -> ClientData:
    """The current training data followed by remembered examples making up ``share`` of
    the whole: the reservoir in a seeded order, cycled as often as that takes. A share
    of its own, rather than the reservoir once: a reservoir of 50 beside 300 new examples
    would be 14% of each batch, and in class-incremental learning that imbalance alone
    sends every old class to a new one (Chaudhry et al. 2019 replay one memory example per
    new one)."""
    if past is None:
        return data
    count = int(np.floor(share / (1 - share) * len(data.train) + 0.5))
    rows = torch.from_numpy(np.resize(rng.permutation(len(past)), max(count, 1)))
    train = ArrayDataset(torch.cat([data.train.x, past.x[rows]]), torch.cat([data.train.y, past.y[rows]]))
    return replace(data, train=train)


class ExperienceReplay(ClientAlgorithm):
    """Trains on the current data plus a reservoir sample of the past (the trainer's
    ``replay_size``); the reservoir lives in the client's state."""

    name: ClassVar[str] = "replay"
    metric_reducers: ClassVar[dict[str, str]] = {"replay_buffer": "mean", "replay_new": "sum"}

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return settings(run.trainer).replay_size > 0

    def local_data(
        self,
        task: TrainTask,
        data: ClientData,
        run: LocalRun,
        classes: Callable[[], int],
        state: ClientState,
        module: nn.Module,
    ) -> ClientData:
        cfg = settings(run.trainer)
        rng = np.random.default_rng([task.seed, _STREAM])
        past = buffer(state)  # before this round's examples enter: they are in the data already
        new = offer(state, data.train, cfg.replay_size, rng)
        state["replay_new"] = np.array([new], np.int64)
        return with_replay(data, past, cfg.replay_share, rng)

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        new = int(state.pop("replay_new", np.zeros(1, np.int64))[0])
        held = len(state[REPLAY_Y]) if REPLAY_Y in state else 0
        return ClientOutput(metrics={"replay_buffer": held, "replay_new": new})


register(ExperienceReplay())
