"""Seeded randomness. Every random choice in a run derives from (run seed, round, purpose).

Nothing reads global random state, so a resumed run draws exactly what an uninterrupted
one would, and runs are independent of the order clients happen to be processed in.

The exception is randomness that protects privacy. DP noise, and the sampling that DP's
amplification assumes nobody can predict (which clients a round picks, which examples
a DP-SGD batch holds), must not be derivable from a run seed that is written in a config
file. Those draws come from ``os.urandom`` unless a run explicitly chooses the seeded,
reproducible and unsafe mode (``NoiseName.SEEDED``) for experiments.
"""

from __future__ import annotations

import enum
import hashlib
import os

import numpy as np


class NoiseName(enum.StrEnum):
    """Where privacy-protecting randomness comes from."""

    SECURE = "secure"  # os.urandom (ChaCha20 keyed from it for noise): the only choice for real data
    SEEDED = "seeded"  # reproducible from the run seed: experiments only


def secret_seed() -> int:
    """63 bits nobody can derive from the run's config."""
    return int.from_bytes(os.urandom(8), "little") >> 1


class Stream(enum.IntEnum):
    """What a generator is for; part of its seed so streams never overlap."""

    SELECTION = 1
    CLIENT = 2
    FEDERATED_EVAL = 3
    TRANSFORM = 4
    PARTITION = 5
    STRAGGLERS = 6
    DP_NOISE = 7
    PERSONAL = 8  # a personal model's own batches (FedRep's head phase, Ditto, fine-tuning)
    PRETRAIN = 9  # the server's pretraining on proxy data: its batches and subset


def _tag(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def seed_for(run_seed: int, round: int, stream: Stream, client_id: str = "") -> int:
    """A 63-bit seed that depends only on its arguments."""
    seq = np.random.SeedSequence([run_seed, round, int(stream), _tag(client_id)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generator(run_seed: int, round: int, stream: Stream, client_id: str = "") -> np.random.Generator:
    return np.random.default_rng(seed_for(run_seed, round, stream, client_id))
