"""What both halves of secure aggregation share: stages, errors, the neighbourhood graph,
the threshold rule, and the labels that bind keys, shares and signatures to one round.

The protocol (Bonawitz et al., CCS 2017, Fig. 4; SecAgg+ of Bell et al., CCS 2020, runs
the same rounds along a random ``k = O(log n)``-regular graph). Per client ``u``:

0. **Advertise keys**: fresh X25519 pairs ``c_u`` (seals shares) and ``s_u`` (agrees
   masks), a fresh Ed25519 key ``d_u`` (signs Round 3), and a SHA-256 commitment to a fresh
   self-mask seed ``b_u``. The server forwards each client its neighbours' keys.
1. **Share keys**: Shamir shares (threshold t) of ``s_u``'s private key and of ``b_u``
   for each neighbour, sealed with AES-GCM under a key agreed from ``c``; the server only
   routes them.
2. **Masked input**: ``y_u = x_u + PRG(b_u) + sum_v sign(u, v) PRG(s_uv)`` mod 2^32 over the
   neighbours that shared keys (U2); pairwise masks cancel in the sum.
3. **ConsistencyCheck**: the server announces U3 (whose inputs it holds); each client
   signs (round, U3) once.
4. **Unmasking**: given t valid signatures from neighbours on its U3, a client returns its
   share of ``b_v`` for each surviving neighbour and of ``s_v`` for each neighbour in
   U2 - U3; never both for one client. The server rebuilds each secret, checks it against
   its commitment or public key, strips the masks and is left with the sum.

The threshold rule (``t`` shares of ``k`` holders rebuild a secret). Bonawitz et al. 2017
(ePrint 2017/281), Section 6, prove two bounds:

- honest-but-curious server colluding with ``n_C`` clients: privacy holds for ``t > n_C``;
- active (malicious) server colluding with fewer than ``n/3`` clients, with the extra
  ConsistencyCheck round (their Fig. 4, Round 3) and signature keys from a PKI:
  privacy holds for ``t > 2n/3``.

Why 2/3 (the counting behind the proof, as we read it): an active server can tell one
group of honest clients "v dropped" (they reveal v's key ``s_v``) and another "v survived"
(they reveal v's self-mask ``b_v``); holding both, it unmasks ``x_v``. With the check,
every honest client reveals only after ``t`` signatures on the one set ``U3`` it saw, and
honest clients sign once, so two views need ``2(t - n_C) + n_C <= n`` clients: impossible
when ``t > (n + n_C) / 2``, which ``n_C < n/3`` and ``t > 2n/3`` guarantee. Here ``n``
is the number of share holders: a client's neighbours (all other clients in SecAgg,
``k = O(log n)`` in SecAgg+).
"""

from __future__ import annotations

import enum
import hashlib
import math

import numpy as np

from shoal.errors import ShoalError

ACTIVE_BOUND = 2 / 3  # t / k must exceed this (Bonawitz et al. 2017, Section 6, active adversary)


class ThresholdError(ShoalError):
    """Too few clients stayed for the protocol to finish; the round is abandoned."""


class ProtocolError(ShoalError):
    """A message broke the protocol (wrong stage, inconsistent sets, a forged share)."""


class Stage(enum.IntEnum):
    """The rounds of Bonawitz et al. 2017, Fig. 4 (Round 3 is the active-server ConsistencyCheck)."""

    ADVERTISE = 0
    SHARE = 1
    MASKED = 2
    CONSISTENCY = 3
    UNMASK = 4


def secure_threshold(threshold: int, holders: int) -> bool:
    """Whether ``threshold`` shares out of ``holders`` meet the active-server bound t > 2k/3."""
    return 1 <= threshold <= holders and 3 * threshold > 2 * holders


def threshold_for(holders: int, fraction: float) -> int:
    """The smallest t above ``fraction * holders`` and above ``2 * holders / 3``."""
    return min(holders, max(math.floor(fraction * holders) + 1, 2 * holders // 3 + 1))


# -- the neighbourhood graph ---------------------------------------------------------------
def complete_graph(n: int) -> dict[int, tuple[int, ...]]:
    """SecAgg: every client masks with every other. Indices are 1..n (Shamir points)."""
    return {i: tuple(j for j in range(1, n + 1) if j != i) for i in range(1, n + 1)}


def harary_graph(n: int, degree: int, seed: int) -> dict[int, tuple[int, ...]]:
    """SecAgg+: a random ``degree``-regular graph: the clients in a random cyclic order,
    each joined to the ``degree / 2`` before and after it (a Harary graph on a random
    permutation, one of the constructions in Bell et al.)."""
    if degree >= n - 1:
        return complete_graph(n)
    if degree < 2 or degree % 2:
        raise ValueError(f"SecAgg+ needs an even degree >= 2, got {degree}")
    order = np.random.default_rng(seed).permutation(n) + 1
    graph: dict[int, set[int]] = {int(i): set() for i in order}
    for p, node in enumerate(order):
        for step in range(1, degree // 2 + 1):
            other = int(order[(p + step) % n])
            graph[int(node)].add(other)
            graph[other].add(int(node))
    return {i: tuple(sorted(v)) for i, v in graph.items()}


def secagg_plus_degree(n: int) -> int:
    """An even degree of about 3 log2(n) (Bell et al.: O(log n) keeps sums private and
    survives dropouts with high probability), or the complete graph when that is smaller."""
    return min(n - 1, 2 * math.ceil(1.5 * math.log2(max(n, 2))))


# -- labels: every key, seal and signature is bound to its round and parties ---------------
def sign_of(u: int, v: int) -> int:
    """+1 if ``u`` adds the pairwise mask it shares with ``v``, -1 if it subtracts it."""
    return 1 if u < v else -1


def agreement_context(round: int, purpose: str, u: int, v: int) -> bytes:
    return f"{round}/{purpose}/{min(u, v)}-{max(u, v)}".encode()


def share_aad(round: int, sender: int, recipient: int) -> bytes:
    """AES-GCM associated data: the server can neither redirect nor replay a sealed share."""
    return f"{round}|{sender}|{recipient}".encode()


def b_commitment(round: int, index: int, b: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed, sent with the advertised keys, so the server can
    tell a rebuilt ``b_u`` from one corrupted by a forged share (as the public key does for
    ``s_u``). ``b_u`` is 256 uniform bits, so the hash hides it."""
    return hashlib.sha256(b"shoal-secagg/b-commit|%d|%d|" % (round, index) + b).digest()


def consistency_statement(round: int, survivors: tuple[int, ...]) -> bytes:
    """What each client signs in the ConsistencyCheck: this round's U3 (Fig. 4, Round 3)."""
    return b"shoal-secagg/U3|%d|" % round + ",".join(str(v) for v in sorted(survivors)).encode()
