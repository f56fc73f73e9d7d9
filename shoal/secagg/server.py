"""The server's half of secure aggregation (Bonawitz et al. 2017, Fig. 4, the "Server" column).

The server routes keys, sealed shares and signatures, sums the masked inputs and unmasks
the sum. It treats every client as possibly hostile: each answer goes through its
validated schema (:mod:`.wire`) and is checked against the round (the sender's index, the
set of secrets it was asked for, no key reused); a bad answer is that client's drop, its
reason in ``dropped_reasons``, and never an exception. Every rebuilt secret is checked:
an ``s`` key against its advertised public key, a ``b`` seed against the SHA-256
commitment sent with the keys. One forged share is outvoted when a spare share exists
(:func:`.shamir.recover`); more make the round abort with :class:`ProtocolError` naming
the client whose secret failed, never a wrong sum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from shoal.errors import ConfigError, WireFormatError
from shoal.secagg import shamir
from shoal.secagg.common import (
    ProtocolError,
    ThresholdError,
    agreement_context,
    b_commitment,
    consistency_statement,
    secure_threshold,
    sign_of,
)
from shoal.secagg.crypto import (
    KEY_BYTES,
    MIN_RING_BITS,
    RING_BITS,
    KeyPair,
    agree,
    mask,
    ring_mask,
    usable_exchange_key,
    verify,
)
from shoal.secagg.wire import (
    Consistency,
    Deliver,
    PeerKeys,
    Roster,
    Setup,
    Unmask,
    read_advertise,
    read_masked,
    read_ready,
    read_shares,
    read_signed,
    read_unmasked,
)


class Channel(Protocol):
    """Delivers a message to a client and returns its answer, or None if it is gone."""

    def call(self, client_id: str, message: bytes) -> bytes | None: ...


class _FromClient(Protocol):
    @property
    def index(self) -> int: ...


A = TypeVar("A", bound=_FromClient)


@dataclass
class SecAggServer:
    """The coordinator for one round: routes keys and shares, then unmasks the sum.

    It never sees an unmasked individual input: only the client messages of each stage.
    ``log`` keeps every message it received (tests inspect it)."""

    round: int
    clients: Sequence[str]
    threshold: int
    dimension: int
    graph: Mapping[int, tuple[int, ...]]
    channel: Channel
    bound: float = 1.0  # inputs are clamped to [-bound, bound] before fixed-point encoding
    scale: float = 1.0  # fixed-point scale (see crypto.fixed_point_scale)
    ring_bits: int = RING_BITS  # inputs are summed mod 2^ring_bits; each is read at that width
    log: list[tuple[str, bytes]] = field(default_factory=list)
    dropped_reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        smallest = min(len(v) for v in self.graph.values())
        if not secure_threshold(self.threshold, smallest):
            raise ConfigError(
                f"secure aggregation threshold {self.threshold} with k = {smallest} neighbours: it must "
                "satisfy 2k/3 < t <= k (Bonawitz et al. 2017, Section 6, active server), "
                f"here t >= {2 * smallest // 3 + 1}"
            )
        if not MIN_RING_BITS <= self.ring_bits <= RING_BITS:
            raise ConfigError(f"ring_bits must be in [{MIN_RING_BITS}, {RING_BITS}], got {self.ring_bits}")
        self.index = {cid: i + 1 for i, cid in enumerate(self.clients)}
        self.by_index = {i: cid for cid, i in self.index.items()}
        self.keys: dict[int, PeerKeys] = {}
        self.commitments: dict[int, bytes] = {}  # client -> SHA-256 of its self-mask seed
        self.sharers: set[int] = set()  # U2
        self.ready: set[int] = set()  # U2 members that acknowledged their shares: inputs come from these
        self.survivors_of_input: list[str] = []  # U3: the clients whose inputs are in the sum
        self.bytes_sent = self.bytes_received = 0  # protocol traffic besides the masked inputs

    def _drop(self, i: int, reason: str) -> None:
        self.dropped_reasons.setdefault(self.by_index[i], reason)

    def _ask(self, i: int, message: bytes, read: Callable[[bytes], A]) -> A | None:
        """The client's answer, read and checked, or None (and the reason recorded)."""
        cid = self.by_index[i]
        answer = self.channel.call(cid, message)
        self.bytes_sent += len(message)
        self.bytes_received += len(answer or b"")
        if answer is None:
            self._drop(i, "gone")
            return None
        self.log.append((cid, answer))
        try:
            fields = read(answer)
        except WireFormatError as exc:
            self._drop(i, f"malformed answer: {exc}")
            return None
        if fields.index != i:
            self._drop(i, "answered with another client's index")
            return None
        return fields

    def _need(self, have: int, stage: str) -> None:
        if have < self.threshold:
            raise ThresholdError(
                f"secure aggregation, round {self.round}: {have} clients at the {stage} stage, "
                f"threshold is {self.threshold}; the round is abandoned"
            )

    # -- Rounds 0-1 and the delivery of shares ---------------------------------------------
    def setup(self) -> None:
        """Advertise keys, share keys, deliver shares: afterwards clients can mask."""
        self._advertise()
        routed = self._collect_shares()
        for i in sorted(self.sharers):
            mine = {u: s for u, s in routed[i].items() if u in self.sharers}
            sharers = (*(v for v in self.graph[i] if v in self.sharers), i)
            if self._ask(i, Deliver(mine, sharers).pack(), read_ready) is not None:
                self.ready.add(i)
        # Everyone in U2 stays in it: its neighbours mask with it, and if it sends no
        # (accepted) masked input its key is rebuilt from shares at unmasking.
        self._need(len(self.ready), "share-delivery")

    def _advertise(self) -> None:
        seen: set[bytes] = set()
        for i in self.by_index:
            setup = Setup(self.round, i, self.threshold, self.dimension, tuple(self.graph[i]),
                          self.bound, self.scale, self.ring_bits)  # fmt: skip
            f = self._ask(i, setup.pack(), read_advertise)
            if f is None:
                continue
            k = f.keys
            if not (usable_exchange_key(k.c_pk) and usable_exchange_key(k.s_pk)):
                self._drop(i, "advertised a key no one can agree with")
            elif {k.c_pk, k.s_pk, k.d_pk, f.b_commit} & seen or len({k.c_pk, k.s_pk, k.d_pk}) < 3:
                self._drop(i, "advertised a key or commitment already in use")
            else:
                self.keys[i], self.commitments[i] = k, f.b_commit
                seen |= {k.c_pk, k.s_pk, k.d_pk, f.b_commit}
        self._need(len(self.keys), "advertise-keys")

    def _collect_shares(self) -> dict[int, dict[int, bytes]]:
        routed: dict[int, dict[int, bytes]] = {i: {} for i in self.keys}
        for i in sorted(self.keys):
            peers = {v: self.keys[v] for v in self.graph[i] if v in self.keys}
            f = self._ask(i, Roster(peers).pack(), read_shares)
            if f is None:
                continue
            if set(f.sealed) != set(peers):
                self._drop(i, "did not share with exactly its neighbours")
                continue
            self.sharers.add(i)
            for v, sealed in f.sealed.items():
                routed[v][i] = sealed
        self._need(len(self.sharers), "share-keys")
        return routed

    # -- Rounds 2-4 ------------------------------------------------------------------------
    def aggregate(self, masked: Mapping[str, bytes]) -> np.ndarray:
        """Sum the masked inputs that came, run the consistency check, ask for shares,
        strip every mask. ThresholdError if too few stay, ProtocolError if a secret cannot
        be rebuilt to match its commitment."""
        inputs = self._masked_inputs(masked)
        survivors, dropped = set(inputs), self.sharers - set(inputs)
        self.survivors_of_input = [self.by_index[i] for i in sorted(survivors)]
        # A survivor reveals shares only if t of its own neighbours survived (itself not
        # counted): say so now rather than after every client has refused to sign.
        fewest = min(len(survivors & set(self.graph[i])) for i in survivors)
        if fewest < self.threshold:
            raise ThresholdError(
                f"secure aggregation, round {self.round}: {len(survivors)} clients sent masked "
                f"inputs, so a survivor has {fewest} surviving neighbours and threshold is "
                f"{self.threshold}; the round is abandoned (pick a larger cohort, or over-select less)"
            )
        signatures = self._consistency_check(tuple(sorted(survivors)))
        s_shares, b_shares = self._collect_unmasking(survivors, dropped, signatures)
        total = np.zeros(self.dimension, np.uint32)
        for y in inputs.values():
            total += y
        weights: dict[tuple[int, ...], list[int]] = {}  # Lagrange weights per set of share holders
        for u, shares in b_shares.items():
            b = self._rebuild(u, shares, "self-mask seed", weights, self._commits_to(u))
            total -= mask(b, self.dimension)
        for v, shares in s_shares.items():
            key = KeyPair.from_secret(self._rebuild(v, shares, "mask key", weights, self._is_key_of(v)))
            for w in self.graph[v]:
                if w in survivors:  # w added sign(w, v) * PRG(s_wv); take it back out
                    seed = agree(key.private, self.keys[w].s_pk, agreement_context(self.round, "mask", v, w))
                    pair = mask(seed, self.dimension)
                    total = total - pair if sign_of(w, v) > 0 else total + pair
        return total & ring_mask(self.ring_bits)  # uint32 wraps mod 2^32, which 2^R divides

    def _masked_inputs(self, masked: Mapping[str, bytes]) -> dict[int, np.ndarray]:
        inputs: dict[int, np.ndarray] = {}
        for cid, message in masked.items():
            i = self.index.get(cid)
            if i is None or i not in self.ready:
                continue
            self.log.append((cid, message))
            try:
                m = read_masked(message, self.dimension, self.ring_bits)
            except WireFormatError as exc:
                self._drop(i, f"malformed masked input: {exc}")
                continue
            if m.index != i:
                self._drop(i, "masked input under another client's index")
                continue
            inputs[i] = m.vector
        self._need(len(inputs), "masked-input")
        return inputs

    def _consistency_check(self, survivors: tuple[int, ...]) -> dict[int, bytes]:
        """Round 3: every survivor signs U3; only signatures that verify are forwarded."""
        statement = consistency_statement(self.round, survivors)
        signatures: dict[int, bytes] = {}
        for i in survivors:
            f = self._ask(i, Consistency(survivors).pack(), read_signed)
            if f is None:
                continue
            if verify(self.keys[i].d_pk, f.signature, statement):
                signatures[i] = f.signature
            else:
                self._drop(i, "its consistency signature does not verify")
        self._need(len(signatures), "consistency-check")
        return signatures

    def _collect_unmasking(
        self, survivors: set[int], dropped: set[int], signatures: Mapping[int, bytes]
    ) -> tuple[dict[int, list[tuple[int, int]]], dict[int, list[tuple[int, int]]]]:
        """Round 4: from each signer, its shares of b for surviving neighbours and of s for
        dropped ones, exactly those, or none of its answer is used."""
        s_shares: dict[int, list[tuple[int, int]]] = {v: [] for v in dropped}
        b_shares: dict[int, list[tuple[int, int]]] = {u: [] for u in survivors}
        for i in sorted(signatures):
            near = set(self.graph[i])
            # t signatures are what a client needs, and all forwarded ones were verified here
            proof = {v: signatures[v] for v in sorted(near & set(signatures))[: self.threshold]}
            if len(proof) < self.threshold:  # it would refuse, rightly: do not ask
                self._drop(i, f"only {len(proof)} of its neighbours signed U3")
                continue
            f = self._ask(i, Unmask(tuple(sorted(survivors)), proof).pack(), read_unmasked)
            if f is None:
                continue
            if set(f.b) != survivors & near or set(f.s) != dropped & near:
                self._drop(i, "unmasking answer does not hold exactly the shares asked for")
                continue
            for v, y in f.s.items():
                s_shares[v].append((i, y))  # x is the sender's own index: no client picks its point
            for u, y in f.b.items():
                b_shares[u].append((i, y))
        return s_shares, b_shares

    def _commits_to(self, u: int) -> Callable[[bytes], bool]:
        return lambda seed: b_commitment(self.round, u, seed) == self.commitments[u]

    def _is_key_of(self, v: int) -> Callable[[bytes], bool]:
        return lambda secret: KeyPair.from_secret(secret).public == self.keys[v].s_pk

    def _rebuild(
        self,
        owner: int,
        shares: list[tuple[int, int]],
        what: str,
        weights: dict[tuple[int, ...], list[int]],
        accept: Callable[[bytes], bool],
    ) -> bytes:
        name = self.by_index[owner]
        self._need(len(shares), f"unmasking ({what} of client {name})")
        found = shamir.recover(shares, self.threshold, KEY_BYTES, accept, weights)
        if found is None:
            raise ProtocolError(
                f"secure aggregation, round {self.round}: the shares of client {name}'s {what} do not "
                "rebuild the value it committed to (forged shares from two or more clients, or a false "
                "commitment); the round is abandoned"
            )
        if found.left_out is not None:
            self._drop(found.left_out, f"its share of client {name}'s {what} was forged")
        return found.secret
