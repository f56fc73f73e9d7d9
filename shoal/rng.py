"""Seeded randomness. Every random choice in a run derives from (run seed, round, purpose).

Nothing reads global random state, so a resumed run draws exactly what an uninterrupted
one would, and runs are independent of the order clients happen to be processed in.
"""

from __future__ import annotations

import enum
import hashlib

import numpy as np


class Stream(enum.IntEnum):
    """What a generator is for; part of its seed so streams never overlap."""

    SELECTION = 1
    CLIENT = 2
    FEDERATED_EVAL = 3
    TRANSFORM = 4
    PARTITION = 5
    STRAGGLERS = 6
    DP_NOISE = 7


def _tag(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def seed_for(run_seed: int, round: int, stream: Stream, client_id: str = "") -> int:
    """A 63-bit seed that depends only on its arguments."""
    seq = np.random.SeedSequence([run_seed, round, int(stream), _tag(client_id)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generator(run_seed: int, round: int, stream: Stream, client_id: str = "") -> np.random.Generator:
    return np.random.default_rng(seed_for(run_seed, round, stream, client_id))
