"""Shamir's t-of-n secret sharing over the prime field GF(2^521 - 1).

Written here because no maintained Python library offers it over a field large enough
for 32-byte secrets with the checks this protocol needs. The field is the Mersenne prime
2^521 - 1, so any secret below 2^512 (a 32-byte key, a 64-byte seed) is one element.
Coefficients come from ``secrets`` (the OS CSPRNG). Shares are points ``(x, f(x))`` with
``x`` in 1..2^32 (x = 0 would reveal the secret); reconstruction is Lagrange interpolation
at 0 and needs ``t`` shares with distinct x. Fewer than ``t`` shares reveal nothing.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PRIME = 2**521 - 1
SECRET_BYTES = 64  # the largest secret one share carries
SHARE_BYTES = (PRIME.bit_length() + 7) // 8  # 66: one field element, as it travels


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

    Computed once per set of share holders and reused for every secret they share. The
    products of the (small) points are exact integers and the denominators are inverted
    together (Montgomery's trick): one modular inverse per set instead of one per point."""
    if len(set(xs)) != len(xs):
        raise ValueError("share points must be distinct")
    numerator = math.prod(xs)
    denominators = [math.prod(xj - xi for xj in xs if xj != xi) % PRIME for xi in xs]
    return [
        numerator // xi % PRIME * inverse % PRIME
        for xi, inverse in zip(xs, _inverses(denominators), strict=True)
    ]


def _inverses(values: Sequence[int]) -> list[int]:
    """Modular inverses of nonzero field elements with a single ``pow``: prefix products, one
    inverse of their total, then a backward sweep."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out


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


@dataclass(frozen=True)
class Recovered:
    secret: bytes
    left_out: int | None  # the x whose share had to be left out for the secret to check, if any


def recover(
    shares: Sequence[tuple[int, int]],
    threshold: int,
    length: int,
    accept: Callable[[bytes], bool],
    weights: dict[tuple[int, ...], list[int]] | None = None,
) -> Recovered | None:
    """The secret that ``accept`` confirms (a commitment or a public key), or None.

    Interpolates the ``threshold`` shares of lowest x first (their Lagrange weights are cached
    in ``weights``, shared by every secret with the same holders). If that secret fails the
    check and one more share exists, tries each ``threshold``-subset of the first
    ``threshold + 1`` shares that leaves one out: one forged share among them can then never
    stop the rebuild. Cost: O(threshold^2) field operations in all, only when a share is
    forged; two or more forged shares make it return None (the caller aborts the round).
    """
    points = sorted(shares)[: threshold + 1]
    if len(points) < threshold:
        return None
    first = points[:threshold]
    xs = tuple(x for x, _ in first)
    cache = weights if weights is not None else {}
    if xs not in cache:
        cache[xs] = lagrange_at_zero(xs)
    secret = _checked([y for _, y in first], cache[xs], length, accept)
    if secret is not None:
        return Recovered(secret, None)
    if len(points) == threshold:
        return None
    # Weights of the subset without x_j from those of all t + 1 points:
    # w_i' = w_i * (x_j - x_i) / x_j, since w_i = prod_{k != i} x_k / (x_k - x_i).
    full = lagrange_at_zero([x for x, _ in points])
    for j, (xj, _) in enumerate(points[:threshold]):  # leaving out the last was tried above
        inverse = pow(xj, -1, PRIME)
        kept = [(i, x, y) for i, (x, y) in enumerate(points) if i != j]
        w = [full[i] * (xj - x) * inverse % PRIME for i, x, _ in kept]
        secret = _checked([y for _, _, y in kept], w, length, accept)
        if secret is not None:
            return Recovered(secret, xj)
    return None


def _checked(
    ys: Sequence[int], weights: Sequence[int], length: int, accept: Callable[[bytes], bool]
) -> bytes | None:
    try:
        secret = combine(ys, weights, length)
    except ValueError:  # the shares interpolate to something longer than any secret
        return None
    return secret if accept(secret) else None
