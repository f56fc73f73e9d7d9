"""Secure aggregation (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020).

The server learns the sum of the clients' vectors and nothing else about any one of them,
even when clients drop out mid-protocol, as long as at least ``threshold`` stay (in every
client's neighbourhood, for SecAgg+). Semi-honest server model: the server follows the
protocol but may look at everything it receives. The four rounds, per client ``u``:

0. **Advertise keys**: two fresh X25519 pairs, ``c_u`` (to encrypt shares) and ``s_u`` (to
   agree on masks); the public halves go to the server, which forwards each client the
   keys of its neighbours (all other clients in SecAgg; ``k = O(log n)`` of them on a
   random regular graph in SecAgg+).
1. **Share keys**: a fresh self-mask seed ``b_u``; Shamir shares (threshold t) of ``b_u``
   and of ``s_u``'s private key for each neighbour, each sealed with AES-GCM under a key
   agreed from ``c_u`` and the neighbour's public ``c_v``. The server only routes them.
2. **Masked input**: ``y_u = x_u + PRG(b_u) + sum_v sign(u, v) PRG(s_uv)`` mod 2^32 over the
   neighbours that shared keys, ``s_uv`` agreed from ``s_u`` and ``s_v``; the pairwise masks
   cancel in the sum, the self-mask hides ``x_u`` even if a pairwise seed leaks.
3. **Unmasking**: for every neighbour that dropped after sharing, a client returns its
   share of that neighbour's ``s`` key (so the server can remove the dangling pairwise
   masks); for every survivor, its share of ``b``. Never both for one client, which
   clients enforce. The server reconstructs, strips the masks and is left with the sum.

The classes speak bytes (:mod:`shoal.secagg.wire`), so a simulation drives them over an
in-process channel and a deployment over the network with the same messages.
"""

from __future__ import annotations

import enum
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from cryptography.exceptions import InvalidTag

from shoal.errors import ShoalError, WireFormatError
from shoal.secagg import shamir
from shoal.secagg.crypto import KEY_BYTES, KeyPair, agree, encode, mask, open_sealed, seal
from shoal.secagg.wire import hexed, kind_of, pack, unhexed, unpack


class ThresholdError(ShoalError):
    """Too few clients stayed for the protocol to finish; the round is abandoned."""


class ProtocolError(ShoalError):
    """A message broke the protocol (wrong stage, inconsistent sets, a forged share)."""


class Stage(enum.IntEnum):
    ADVERTISE = 0
    SHARE = 1
    MASKED = 2
    UNMASK = 3


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


def _sign(u: int, v: int) -> int:
    return 1 if u < v else -1


def _context(round: int, purpose: str, u: int, v: int) -> bytes:
    return f"{round}/{purpose}/{min(u, v)}-{max(u, v)}".encode()


# -- the device side -----------------------------------------------------------------------
@dataclass
class _ClientRound:
    round: int
    index: int
    threshold: int
    dimension: int
    neighbors: tuple[int, ...]
    bound: float
    scale: float
    c: KeyPair = field(default_factory=KeyPair)
    s: KeyPair = field(default_factory=KeyPair)
    b: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_BYTES))
    stage: Stage = Stage.ADVERTISE
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # neighbour -> (c_pk, s_pk)
    held: dict[int, tuple[int, int]] = field(default_factory=dict)  # neighbour -> (share of s_sk, share of b)
    sharers: tuple[int, ...] = ()  # U2: the neighbours whose shares arrived


class SecAggClient:
    """One device's side of the protocol, for one round at a time."""

    def __init__(self) -> None:
        self._r: _ClientRound | None = None

    def handle(self, message: bytes) -> bytes:
        """Answer the server's next message (setup, roster, delivery or unmask request)."""
        kind = kind_of(message)
        if kind == "setup":
            return self._advertise(message)
        if kind == "roster":
            return self._share(message)
        if kind == "deliver":
            return self._receive(message)
        if kind == "unmask":
            return self._unmask(message)
        raise WireFormatError(f"unexpected secure-aggregation message {kind!r}")

    def _state(self, stage: Stage) -> _ClientRound:
        if self._r is None or self._r.stage is not stage:
            raise ProtocolError(f"message out of order: expected stage {stage.name}")
        return self._r

    def _advertise(self, message: bytes) -> bytes:
        f, _ = unpack(message, "setup")
        r = _ClientRound(
            round=int(f["round"]),
            index=int(f["index"]),
            threshold=int(f["threshold"]),
            dimension=int(f["dimension"]),
            neighbors=tuple(int(v) for v in f["neighbors"]),
            bound=float(f["bound"]),
            scale=float(f["scale"]),
        )
        if r.threshold < 1 or r.threshold > len(r.neighbors):
            raise ProtocolError(f"threshold {r.threshold} is impossible with {len(r.neighbors)} neighbours")
        self._r = r
        r.stage = Stage.SHARE
        return pack("advertise", {"index": r.index, "c_pk": hexed(r.c.public), "s_pk": hexed(r.s.public)})

    def _share(self, message: bytes) -> bytes:
        r = self._state(Stage.SHARE)
        f, _ = unpack(message, "roster")
        keys = {int(v): (unhexed(c, 32), unhexed(s, 32)) for v, (c, s) in f["keys"].items()}
        if not set(keys) <= set(r.neighbors):
            raise ProtocolError("the roster lists keys of clients that are not this client's neighbours")
        if len(keys) < r.threshold:
            raise ThresholdError(f"only {len(keys)} neighbours advertised keys; threshold is {r.threshold}")
        r.keys = keys
        peers = sorted(keys)
        s_shares = shamir.split(r.s.secret_bytes(), r.threshold, peers)
        b_shares = shamir.split(r.b, r.threshold, peers)
        sealed = {}
        for v, (_, s_y), (_, b_y) in zip(peers, s_shares, b_shares, strict=True):
            key = agree(r.c.private, keys[v][0], _context(r.round, "enc", r.index, v))
            body = json.dumps({"from": r.index, "to": v, "s": hex(s_y), "b": hex(b_y)}).encode()
            sealed[str(v)] = hexed(seal(key, body, f"{r.round}|{r.index}|{v}".encode()))
        r.stage = Stage.MASKED  # shares are out: from here, inputs may be masked
        return pack("shares", {"index": r.index, "sealed": sealed})

    def _receive(self, message: bytes) -> bytes:
        """The shares neighbours sealed for this client, and U2 (who shared)."""
        r = self._state(Stage.MASKED)
        f, _ = unpack(message, "deliver")
        sharers = tuple(sorted(int(v) for v in f["sharers"]))
        for u_text, sealed_hex in f["sealed"].items():
            u = int(u_text)
            if u not in r.keys:
                raise ProtocolError(f"a share from {u}, who is not a neighbour with keys")
            key = agree(r.c.private, r.keys[u][0], _context(r.round, "enc", r.index, u))
            try:
                body = json.loads(open_sealed(key, unhexed(sealed_hex), f"{r.round}|{u}|{r.index}".encode()))
            except InvalidTag:
                raise ProtocolError(f"the share from {u} failed authentication") from None
            if body.get("from") != u or body.get("to") != r.index:
                raise ProtocolError(f"the share from {u} is addressed wrongly")
            r.held[u] = (int(body["s"], 16), int(body["b"], 16))
        if set(sharers) - set(r.held) - {r.index} or not set(sharers) <= set(r.keys) | {r.index}:
            raise ProtocolError("the server's list of sharers does not match the shares delivered")
        if len([v for v in sharers if v != r.index]) < r.threshold:
            raise ThresholdError(f"only {len(sharers)} clients shared keys; threshold is {r.threshold}")
        r.sharers = tuple(v for v in sharers if v != r.index)
        return pack("ready", {"index": r.index})

    def masked_input(self, values: np.ndarray) -> bytes:
        """Stage 2: the input, in fixed point (clamped to the round's bound), under the
        self-mask and the pairwise masks."""
        r = self._state(Stage.MASKED)
        if not r.sharers:
            raise ProtocolError("masked input before the shares were delivered")
        if values.shape != (r.dimension,):
            raise ValueError(f"secure aggregation expects a vector of {r.dimension}, got {values.shape}")
        encoded = values if values.dtype == np.uint32 else encode(values, r.bound, r.scale)
        y = encoded + mask(r.b, r.dimension)
        for v in r.sharers:
            seed = agree(r.s.private, r.keys[v][1], _context(r.round, "mask", r.index, v))
            pair = mask(seed, r.dimension)
            y = y + pair if _sign(r.index, v) > 0 else y - pair
        r.stage = Stage.UNMASK
        return pack("masked", {"index": r.index}, y)

    def _unmask(self, message: bytes) -> bytes:
        r = self._state(Stage.UNMASK)
        f, _ = unpack(message, "unmask")
        survivors, dropped = {int(v) for v in f["survivors"]}, {int(v) for v in f["dropped"]}
        everyone = set(r.sharers) | {r.index}
        if survivors & dropped or not (survivors | dropped) <= everyone or r.index not in survivors:
            raise ProtocolError(
                "the unmask request is inconsistent: a client cannot be both survivor and dropout"
            )
        if len(survivors) < r.threshold:
            raise ThresholdError(f"only {len(survivors)} survivors; threshold is {r.threshold}")
        s_out = {str(v): hex(r.held[v][0]) for v in sorted(dropped) if v in r.held}
        b_out = {str(v): hex(r.held[v][1]) for v in sorted(survivors) if v in r.held}
        self._r = None  # this round's secrets are spent
        return pack("unmasked", {"index": r.index, "s": s_out, "b": b_out})


# -- the server side -----------------------------------------------------------------------
class Channel(Protocol):
    """Delivers a message to a client and returns its answer, or None if it is gone."""

    def call(self, client_id: str, message: bytes) -> bytes | None: ...


@dataclass
class SecAggServer:
    """The coordinator for one round: routes keys and shares, then unmasks the sum.

    It never sees an unmasked individual input: only the four kinds of client messages.
    ``log`` keeps every message it received (tests inspect it)."""

    round: int
    clients: Sequence[str]
    threshold: int
    dimension: int
    graph: Mapping[int, tuple[int, ...]]
    channel: Channel
    bound: float = 1.0  # inputs are clamped to [-bound, bound] before fixed-point encoding
    scale: float = 1.0  # fixed-point scale (see crypto.fixed_point_scale)
    log: list[tuple[str, bytes]] = field(default_factory=list)
    dropped_reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {cid: i + 1 for i, cid in enumerate(self.clients)}
        self.by_index = {i: cid for cid, i in self.index.items()}
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.sharers: set[int] = set()
        self.survivors_of_input: list[str] = []  # the clients whose inputs are in the sum
        self.bytes_sent = self.bytes_received = 0  # protocol traffic besides the masked inputs

    def _ask(self, cid: str, message: bytes, kind: str) -> dict[str, Any] | None:
        answer = self.channel.call(cid, message)
        self.bytes_sent += len(message)
        self.bytes_received += len(answer or b"")
        if answer is None:
            self.dropped_reasons.setdefault(cid, "gone")
            return None
        self.log.append((cid, answer))
        try:
            fields, _ = unpack(answer, kind, max_vector=0)
        except WireFormatError as exc:
            self.dropped_reasons.setdefault(cid, str(exc))
            return None
        if fields.get("index") != self.index[cid]:
            self.dropped_reasons.setdefault(cid, "answered with another client's index")
            return None
        return fields

    def _need(self, have: int, stage: str) -> None:
        if have < self.threshold:
            raise ThresholdError(
                f"secure aggregation, round {self.round}: {have} clients at the {stage} stage, "
                f"threshold is {self.threshold}; the round is abandoned"
            )

    def setup(self) -> None:
        """Stages 0 and 1 and the delivery of shares: afterwards clients can mask."""
        for cid, i in self.index.items():
            msg = pack("setup", {"round": self.round, "index": i, "threshold": self.threshold,
                                 "dimension": self.dimension, "neighbors": list(self.graph[i]),
                                 "bound": self.bound, "scale": self.scale})  # fmt: skip
            f = self._ask(cid, msg, "advertise")
            if f is not None:
                try:
                    self.keys[i] = (unhexed(f["c_pk"], 32), unhexed(f["s_pk"], 32))
                except (WireFormatError, KeyError) as exc:
                    self.dropped_reasons[cid] = f"bad keys: {exc}"
        self._need(len(self.keys), "advertise-keys")
        routed: dict[int, dict[str, str]] = {i: {} for i in self.keys}
        for i in sorted(self.keys):
            peers = {
                str(v): [hexed(self.keys[v][0]), hexed(self.keys[v][1])]
                for v in self.graph[i]
                if v in self.keys
            }
            f = self._ask(self.by_index[i], pack("roster", {"keys": peers}), "shares")
            if f is None or not isinstance(f.get("sealed"), dict):
                continue
            if set(f["sealed"]) != set(peers):
                self.dropped_reasons[self.by_index[i]] = "did not share with every neighbour"
                continue
            self.sharers.add(i)
            for v, sealed in f["sealed"].items():
                routed[int(v)][str(i)] = sealed
        self._need(len(self.sharers), "share-keys")
        ready = set()
        for i in sorted(self.sharers):
            mine = {u: s for u, s in routed[i].items() if int(u) in self.sharers}
            sharers = [v for v in self.graph[i] if v in self.sharers] + [i]
            if self._ask(self.by_index[i], pack("deliver", {"sealed": mine, "sharers": sharers}), "ready"):
                ready.add(i)
        # Everyone in U2 stays in it: its neighbours mask with it, and if it cannot send a
        # masked input its key is rebuilt from shares at unmasking.
        self._need(len(ready), "share-delivery")

    def aggregate(self, masked: Mapping[str, bytes]) -> np.ndarray:
        """Stages 2 and 3: sum the masked inputs that came, ask for shares, strip every mask."""
        inputs: dict[int, np.ndarray] = {}
        for cid, message in masked.items():
            i = self.index.get(cid)
            self.log.append((cid, message))
            if i is None or i not in self.sharers:
                continue
            try:
                fields, y = unpack(message, "masked", max_vector=self.dimension)
            except WireFormatError as exc:
                self.dropped_reasons[cid] = str(exc)
                continue
            if fields.get("index") == i and y is not None and y.shape == (self.dimension,):
                inputs[i] = y
        self._need(len(inputs), "masked-input")
        survivors, dropped = set(inputs), self.sharers - set(inputs)
        self.survivors_of_input = [self.by_index[i] for i in sorted(survivors)]
        s_shares: dict[int, list[tuple[int, int]]] = {v: [] for v in dropped}
        b_shares: dict[int, list[tuple[int, int]]] = {u: [] for u in survivors}
        for i in sorted(survivors):
            near = set(self.graph[i]) | {i}
            request = pack(
                "unmask", {"survivors": sorted(survivors & near), "dropped": sorted(dropped & near)}
            )
            f = self._ask(self.by_index[i], request, "unmasked")
            if f is None:
                continue
            for v, y_hex in f.get("s", {}).items():
                if int(v) in s_shares:
                    s_shares[int(v)].append((i, int(y_hex, 16)))
            for u, y_hex in f.get("b", {}).items():
                if int(u) in b_shares:
                    b_shares[int(u)].append((i, int(y_hex, 16)))
        total = np.zeros(self.dimension, np.uint32)
        for y in inputs.values():
            total += y
        weights: dict[tuple[int, ...], list[int]] = {}  # Lagrange weights per set of share holders

        def rebuild(shares: list[tuple[int, int]]) -> bytes:
            used = sorted(shares)[: self.threshold]
            xs = tuple(x for x, _ in used)
            if xs not in weights:
                weights[xs] = shamir.lagrange_at_zero(xs)
            return shamir.combine([y for _, y in used], weights[xs], KEY_BYTES)

        for u, shares in b_shares.items():
            self._need(len(shares), f"unmasking (self-mask of client {self.by_index[u]})")
            total -= mask(rebuild(shares), self.dimension)
        for v, shares in s_shares.items():
            self._need(len(shares), f"unmasking (keys of dropped client {self.by_index[v]})")
            key = KeyPair.from_secret(rebuild(shares))
            if key.public != self.keys[v][1]:
                raise ProtocolError(
                    f"the shares of client {self.by_index[v]}'s key do not rebuild its public key"
                )
            for w in self.graph[v]:
                if w in survivors:  # w added sign(w, v) * PRG(s_wv); take it back out
                    pair = mask(
                        agree(key.private, self.keys[w][1], _context(self.round, "mask", v, w)),
                        self.dimension,
                    )
                    total = total - pair if _sign(w, v) > 0 else total + pair
        return total
