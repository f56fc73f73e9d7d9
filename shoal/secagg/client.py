"""One device's half of secure aggregation (Bonawitz et al. 2017, Fig. 4, the "User" column).

Every message from the server is read through its validated schema (:mod:`.wire`) and
checked against what this client already knows (its neighbours, who shared, the ``U3`` it
signed); anything inconsistent raises :class:`ProtocolError` and this client says nothing
more this round. The client, not the server, enforces the two privacy guards:

- it refuses a threshold at or below ``2k/3`` of its ``k`` neighbours (the bound Bonawitz
  et al. prove for an active server, :mod:`.common`), whatever the server asks for;
- before it reveals any share it needs ``t`` valid signatures, from distinct neighbours, on
  the very ``U3`` it signed (the ConsistencyCheck), and it derives who dropped from that
  ``U3`` itself, so it never reveals both ``b_v`` and ``s_v`` of one neighbour.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag

from shoal.errors import WireFormatError
from shoal.secagg import shamir
from shoal.secagg.common import (
    ProtocolError,
    Stage,
    ThresholdError,
    agreement_context,
    b_commitment,
    consistency_statement,
    secure_threshold,
    share_aad,
    sign_of,
)
from shoal.secagg.crypto import (
    KEY_BYTES,
    KeyPair,
    SigningKey,
    agree,
    encode,
    mask,
    open_sealed,
    ring_mask,
    seal,
    verify,
)
from shoal.secagg.wire import (
    Advertise,
    Masked,
    PeerKeys,
    Ready,
    Setup,
    Shares,
    Signed,
    Unmasked,
    kind_of,
    pack_share_body,
    read_consistency,
    read_deliver,
    read_roster,
    read_setup,
    read_share_body,
    read_unmask,
)


@dataclass
class _ClientRound:
    setup: Setup
    c: KeyPair = field(default_factory=KeyPair)  # seals shares
    s: KeyPair = field(default_factory=KeyPair)  # agrees pairwise masks
    d: SigningKey = field(default_factory=SigningKey)  # signs U3 (ConsistencyCheck)
    b: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_BYTES))  # self-mask seed
    stage: Stage = Stage.SHARE
    keys: dict[int, PeerKeys] = field(default_factory=dict)  # neighbour -> its advertised keys
    seeds: dict[int, bytes] = field(default_factory=dict)  # neighbour -> pairwise mask seed s_uv
    held: dict[int, tuple[int, int]] = field(default_factory=dict)  # neighbour -> (share of s, of b)
    sharers: tuple[int, ...] = ()  # U2 within the neighbourhood, this client excluded
    survivors: tuple[int, ...] = ()  # the U3 this client signed


class SecAggClient:
    """One device's side of the protocol, for one round at a time."""

    def __init__(self) -> None:
        self._r: _ClientRound | None = None

    def handle(self, message: bytes) -> bytes:
        """Answer the server's next message; WireFormatError / ProtocolError / ThresholdError
        if it is malformed, out of order or inconsistent (the client then stays silent)."""
        kind = kind_of(message)
        if kind == "setup":
            return self._advertise(message)
        if kind == "roster":
            return self._share(message)
        if kind == "deliver":
            return self._receive(message)
        if kind == "consistency":
            return self._sign(message)
        if kind == "unmask":
            return self._unmask(message)
        raise WireFormatError(f"unexpected secure-aggregation message {kind!r}")

    def _state(self, stage: Stage) -> _ClientRound:
        if self._r is None or self._r.stage is not stage:
            raise ProtocolError(f"message out of order: expected stage {stage.name}")
        return self._r

    def _advertise(self, message: bytes) -> bytes:
        setup = read_setup(message)
        k = len(setup.neighbors)
        if not secure_threshold(setup.threshold, k):
            raise ProtocolError(
                f"the server asks for threshold {setup.threshold} of {k} neighbours; privacy against "
                f"an active server needs t > 2k/3 (Bonawitz et al. 2017, Section 6), so t >= {2 * k // 3 + 1}"
            )
        self._r = r = _ClientRound(setup)
        commit = b_commitment(setup.round, setup.index, r.b)
        return Advertise(setup.index, PeerKeys(r.c.public, r.s.public, r.d.public), commit).pack()

    def _share(self, message: bytes) -> bytes:
        r = self._state(Stage.SHARE)
        keys = read_roster(message).keys
        if not set(keys) <= set(r.setup.neighbors):
            raise ProtocolError("the roster lists keys of clients that are not this client's neighbours")
        if len(keys) < r.setup.threshold:
            raise ThresholdError(f"{len(keys)} neighbours advertised keys; threshold is {r.setup.threshold}")
        r.keys = keys
        peers = sorted(keys)
        s_shares = shamir.split(r.s.secret_bytes(), r.setup.threshold, peers)
        b_shares = shamir.split(r.b, r.setup.threshold, peers)
        round, me = r.setup.round, r.setup.index
        sealed = {}
        try:  # the pairwise mask seeds are agreed now, so a bad key is refused before any share leaves
            for v in peers:
                r.seeds[v] = agree(r.s.private, keys[v].s_pk, agreement_context(round, "mask", me, v))
            for v, (_, s_y), (_, b_y) in zip(peers, s_shares, b_shares, strict=True):
                key = agree(r.c.private, keys[v].c_pk, agreement_context(round, "enc", me, v))
                sealed[v] = seal(key, pack_share_body(me, v, s_y, b_y), share_aad(round, me, v))
        except ValueError:  # X25519 refuses low-order points
            raise ProtocolError("the roster holds a key no one can agree with") from None
        r.stage = Stage.MASKED  # shares are out: from here, inputs may be masked
        return Shares(me, sealed).pack()

    def _receive(self, message: bytes) -> bytes:
        """The shares neighbours sealed for this client, and U2 (who shared)."""
        r = self._state(Stage.MASKED)
        if r.sharers:
            raise ProtocolError("shares were already delivered this round")
        deliver = read_deliver(message)
        round, me = r.setup.round, r.setup.index
        sharers = set(deliver.sharers) - {me}
        if not sharers <= set(r.keys) or set(deliver.sealed) != sharers:
            raise ProtocolError("the server's list of sharers does not match the shares delivered")
        held = {}
        for u, sealed in deliver.sealed.items():
            key = agree(r.c.private, r.keys[u].c_pk, agreement_context(round, "enc", me, u))
            try:
                body = open_sealed(key, sealed, share_aad(round, u, me))
            except InvalidTag:
                raise ProtocolError(f"the share from {u} failed authentication") from None
            sender, recipient, s_y, b_y = read_share_body(body)
            if (sender, recipient) != (u, me):
                raise ProtocolError(f"the share from {u} is addressed wrongly")
            held[u] = (s_y, b_y)
        if len(sharers) < r.setup.threshold:
            raise ThresholdError(f"{len(sharers)} neighbours shared keys; threshold is {r.setup.threshold}")
        r.held, r.sharers = held, tuple(sorted(sharers))
        return Ready(me).pack()

    @property
    def setup(self) -> Setup:
        """The round's setup (its ring, scale and dimension), once this client may mask."""
        return self._state(Stage.MASKED).setup

    def masked_input(self, values: np.ndarray) -> bytes:
        """Stage 2: the input under the self-mask and the pairwise masks, mod 2^ring_bits.
        ``values`` are ring elements (uint32 below 2^ring_bits, from an encoder), or floats
        put in fixed point here (clamped to the round's bound, rounded to nearest)."""
        r = self._state(Stage.MASKED)
        if not r.sharers:
            raise ProtocolError("masked input before the shares were delivered")
        setup = r.setup
        if values.shape != (setup.dimension,):
            raise ValueError(f"secure aggregation expects a vector of {setup.dimension}, got {values.shape}")
        if values.dtype == np.uint32:
            if (values > ring_mask(setup.ring_bits)).any():
                raise ValueError(f"ring elements must be below 2^{setup.ring_bits}")
            encoded = values
        elif setup.bound * setup.scale >= 2 ** (setup.ring_bits - 1):
            raise ProtocolError(f"bound x scale leaves the {setup.ring_bits}-bit ring")
        else:
            encoded = encode(values, setup.bound, setup.scale, setup.ring_bits)
        y = encoded + mask(r.b, setup.dimension)
        for v in r.sharers:
            pair = mask(r.seeds[v], setup.dimension)
            y = y + pair if sign_of(setup.index, v) > 0 else y - pair
        r.stage = Stage.CONSISTENCY
        return Masked(setup.index, y & ring_mask(setup.ring_bits), setup.ring_bits).pack()

    def _sign(self, message: bytes) -> bytes:
        """Round 3, ConsistencyCheck: sign the U3 the server announces, once."""
        r = self._state(Stage.CONSISTENCY)
        survivors = tuple(sorted(read_consistency(message).survivors))
        me, near = r.setup.index, set(survivors) & set(r.setup.neighbors)
        if me not in survivors or not near <= set(r.sharers):
            raise ProtocolError("U3 must hold this client and only neighbours that shared keys")
        if len(near) < r.setup.threshold:
            raise ThresholdError(f"only {len(near)} neighbours survived; threshold is {r.setup.threshold}")
        r.survivors, r.stage = survivors, Stage.UNMASK
        return Signed(me, r.d.sign(consistency_statement(r.setup.round, survivors))).pack()

    def _unmask(self, message: bytes) -> bytes:
        r = self._state(Stage.UNMASK)
        request = read_unmask(message)
        if tuple(sorted(request.survivors)) != r.survivors:
            raise ProtocolError("the unmask request names a different U3 from the one this client signed")
        statement = consistency_statement(r.setup.round, r.survivors)
        near = set(r.survivors) & set(r.setup.neighbors)
        valid = 0
        for v, signature in request.signatures.items():  # distinct signers: keys of one mapping
            if v not in near:
                raise ProtocolError(f"a consistency signature from {v}, who is not a surviving neighbour")
            if not verify(r.keys[v].d_pk, signature, statement):
                raise ProtocolError(f"the consistency signature of {v} does not verify")
            valid += 1
        if valid < r.setup.threshold:
            raise ProtocolError(
                f"{valid} neighbours signed this U3; {r.setup.threshold} must before any share is revealed"
            )
        dropped = set(r.sharers) - near  # shared keys, then sent no input: their s keys are needed
        s_out = {v: r.held[v][0] for v in sorted(dropped)}
        b_out = {v: r.held[v][1] for v in sorted(near)}
        self._r = None  # this round's secrets are spent
        return Unmasked(r.setup.index, s_out, b_out).pack()
