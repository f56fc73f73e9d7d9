"""Gaussian noise for differential privacy, from a source an attacker cannot predict.

A DP guarantee holds only if the noise is unknown to whoever sees the output. numpy's
generators are fine for simulations but not for privacy: their outputs are predictable
from their seed (often a config value) or from earlier outputs. So the default source,
:class:`SecureNoise`, draws its bits from ChaCha20 (``cryptography``) keyed by 32 bytes of
``os.urandom`` and turns them into normals by the Box-Muller transform in float64; runs
with it cannot be replayed. :class:`SeededNoise` derives its stream from (run seed, round,
client) for reproducible experiments only: anyone who knows the seed can subtract the
noise, so it must never protect real data. Written here rather than taken from a library
because no maintained Python package offers CSPRNG-backed Gaussian vectors for numpy.

Known limit: floating-point Gaussian samplers leak through their low-order bits
(Mironov 2012); the defence (snapping or discrete Gaussians) is not implemented.

Skellam noise (distributed DP: the difference of two Poissons, integers, so no low bits
to leak) uses numpy's Poisson sampler. Secure: each call draws a fresh 256-bit key from
the ChaCha20 stream for a PCG64DXSM generator and never reuses it. PCG64 is not a
cryptographic generator (its state can be inferred from enough of its raw outputs), but
no one sees its outputs: each device's noise leaves it masked and only its sum with the
other devices' noise is ever unmasked. Seeded: from (run seed, round, client), as above.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from shoal.rng import NoiseName, Stream, generator


class NoiseSource(Protocol):
    def normal(self, n: int, std: float, round: int, client_id: str = "") -> np.ndarray:
        """``n`` independent N(0, std^2) draws, float64."""
        ...

    def skellam(self, n: int, variance: float, round: int, client_id: str = "") -> np.ndarray:
        """``n`` independent symmetric Skellam draws of the given variance (int64):
        Poisson(variance / 2) - Poisson(variance / 2)."""
        ...


def _skellam(rng: np.random.Generator, n: int, variance: float) -> np.ndarray:
    pair = rng.poisson(variance / 2.0, (2, n)).astype(np.int64)
    out: np.ndarray = pair[0] - pair[1]
    return out


class SecureNoise:
    """ChaCha20 keystream -> uniform doubles -> Box-Muller normals."""

    def __init__(self) -> None:
        cipher = Cipher(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), mode=None)
        self._stream = cipher.encryptor()

    def _uniform(self, n: int) -> np.ndarray:
        """``n`` doubles uniform on (0, 1): 53 random bits each, never 0."""
        bits = np.frombuffer(self._stream.update(bytes(8 * n)), dtype="<u8")
        return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, n: int, std: float, round: int, client_id: str = "") -> np.ndarray:
        half = (n + 1) // 2
        u1, u2 = self._uniform(half), self._uniform(half)
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u2
        z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
        return z * std

    def skellam(self, n: int, variance: float, round: int, client_id: str = "") -> np.ndarray:
        key = int.from_bytes(self._stream.update(bytes(32)), "little")  # fresh, used once
        return _skellam(np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(key))), n, variance)


class SeededNoise:
    """Reproducible noise from (run seed, round, client): for experiments, never for real data."""

    def __init__(self, run_seed: int) -> None:
        self.run_seed = run_seed

    def normal(self, n: int, std: float, round: int, client_id: str = "") -> np.ndarray:
        return generator(self.run_seed, round, Stream.DP_NOISE, client_id).normal(0.0, std, n)

    def skellam(self, n: int, variance: float, round: int, client_id: str = "") -> np.ndarray:
        return _skellam(generator(self.run_seed, round, Stream.DP_NOISE, f"skellam:{client_id}"), n, variance)


def noise_source(name: NoiseName | str, run_seed: int) -> NoiseSource:
    return SecureNoise() if NoiseName(name) is NoiseName.SECURE else SeededNoise(run_seed)
