"""The randomized Walsh-Hadamard rotation: ``x -> H S x / sqrt(D)`` on ``x`` padded to a
power of two ``D``, with ``S`` a diagonal of random signs.

Distributed DP rotates each clipped update before rounding it to integers (Kairouz et
al. 2021, Section 4; Agarwal et al. 2021, Section 4): the rotation is orthogonal, so the
L2 norm (hence the sensitivity) is unchanged, while the energy of any vector spreads
evenly over the coordinates, so no coordinate of the cohort's sum is likely to leave the
ring. The signs come from a seed the whole round shares (public: the server inverts the
rotation with it, and privacy rests on the noise, not on the rotation being secret).

Padding costs ``D - d`` coordinates: every device sends ``D`` ring entries for a model of
``d`` parameters, at worst (``d = 2^k + 1``) nearly twice the bytes.
"""

from __future__ import annotations

import numpy as np


def padded_size(d: int) -> int:
    """``D``: the smallest power of two at or above ``d``."""
    return 1 << max(d - 1, 0).bit_length()


def hadamard(x: np.ndarray) -> np.ndarray:
    """``H x / sqrt(D)`` for ``x`` of length ``D = 2^k`` (orthonormal and its own inverse),
    by the fast transform: ``k`` passes of sums and differences, ``O(D log D)``."""
    n = x.shape[0]
    if n & (n - 1):
        raise ValueError(f"the Hadamard transform needs a power-of-two length, got {n}")
    y = x.astype(np.float64, copy=True)
    h = 1
    while h < n:
        pairs = y.reshape(-1, 2, h)  # (D / 2h, 2, h): each block's two halves
        top, bottom = pairs[:, 0, :].copy(), pairs[:, 1, :]
        pairs[:, 0, :] += bottom
        pairs[:, 1, :] = top - bottom
        h *= 2
    out: np.ndarray = y / np.sqrt(n)
    return out


def signs(seed: int, size: int) -> np.ndarray:
    """``S``: ``size`` random +-1 from the round's shared seed."""
    flips: np.ndarray = np.random.default_rng(seed).integers(0, 2, size) * 2.0 - 1.0
    return flips


def rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """``H S [x, 0...] / sqrt(D)``: ``(d,)`` -> ``(D,)`` float64, same L2 norm."""
    size = padded_size(x.shape[0])
    padded = np.zeros(size, np.float64)
    padded[: x.shape[0]] = x
    return hadamard(padded * signs(seed, size))


def unrotate(y: np.ndarray, seed: int, d: int) -> np.ndarray:
    """The inverse: ``S H y / sqrt(D)``, cut back to the first ``d`` coordinates."""
    x: np.ndarray = (hadamard(y) * signs(seed, y.shape[0]))[:d]
    return x
