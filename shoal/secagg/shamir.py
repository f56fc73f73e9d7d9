"""Shamir's t-of-n secret sharing over the prime field GF(2^521 - 1).

Written here because no maintained Python library offers it over a field large enough
for 32-byte secrets with the checks this protocol needs. The field is the Mersenne prime
2^521 - 1, so any secret below 2^512 (a 32-byte key, a 64-byte seed) is one element.
Coefficients come from ``secrets`` (the OS CSPRNG). Shares are points ``(x, f(x))`` with
``x`` in 1..2^32 (x = 0 would reveal the secret); reconstruction is Lagrange interpolation
at 0 and needs ``t`` shares with distinct x. Fewer than ``t`` shares reveal nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

PRIME = 2**521 - 1
SECRET_BYTES = 64  # the largest secret one share carries


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[tuple[int, int]]:
    """Shares of ``secret`` at the points ``xs``; any ``threshold`` of them recover it."""
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(secret) > SECRET_BYTES:
        raise ValueError(f"a secret of {len(secret)} bytes does not fit the field ({SECRET_BYTES} max)")
    if len(set(xs)) != len(xs) or any(not 0 < x < 2**32 for x in xs):
        raise ValueError("share points must be distinct integers in [1, 2^32)")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Weights ``w_i`` with ``f(0) = sum_i w_i f(x_i)`` for any polynomial of degree < len(xs).

    Computed once per set of share holders and reused for every secret they share."""
    if len(set(xs)) != len(xs):
        raise ValueError("share points must be distinct")
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return weights


def combine(ys: Sequence[int], weights: Sequence[int], length: int) -> bytes:
    """The secret of ``length`` bytes from share values and their Lagrange weights."""
    value = sum(w * y for w, y in zip(weights, ys, strict=True)) % PRIME
    if value >= 2 ** (8 * length):
        raise ValueError(
            "the shares do not interpolate to a secret of this length: corrupt or mismatched shares"
        )
    return value.to_bytes(length, "big")


def reconstruct(shares: Sequence[tuple[int, int]], length: int) -> bytes:
    """The secret from ``threshold`` (or more) shares; ``length`` is the secret's size."""
    xs = [x for x, _ in shares]
    return combine([y for _, y in shares], lagrange_at_zero(xs), length)
